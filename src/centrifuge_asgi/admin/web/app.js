// The admin page: log in, watch the cluster's nodes, look into a channel, run API commands.
// Plain browser JavaScript, no build step: every request goes to <prefix>/admin/*.
'use strict';

(() => {
  const base = location.pathname.replace(/\/(index\.html)?$/, '');
  const TOKEN_KEY = 'centrifuge-asgi-admin-token';
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY) || '';
  let insecure = false;
  let timer = null;

  // Which fields each action takes (the others are hidden).
  const FIELDS = {
    publish: ['channel', 'data'],
    broadcast: ['channels', 'data'],
    disconnect: ['user', 'client'],
    unsubscribe: ['user', 'channel', 'client'],
    presence: ['channel'],
    history: ['channel', 'limit'],
    channels: ['pattern'],
    info: [],
  };

  class Unauthorized extends Error {}

  async function api(method, params) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = `token ${token}`;
    const resp = await fetch(`${base}/admin/api`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ method, params }),
    });
    if (resp.status === 401) throw new Unauthorized();
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    return resp.json();
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === 'class') node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function uptime(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }

  // ------------------------------------------------------------------ login

  function showLogin(message) {
    stopRefresh();
    token = '';
    sessionStorage.removeItem(TOKEN_KEY);
    $('app').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    $('login-error').hidden = !message;
    $('login-error').textContent = message || '';
    $('password').focus();
  }

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = insecure;
    refreshNodes();
    stopRefresh();
    timer = setInterval(refreshNodes, REFRESH_MS);
  }

  function stopRefresh() {
    if (timer) clearInterval(timer);
    timer = null;
  }

  async function login(event) {
    event.preventDefault();
    const button = event.submitter || $('login-form').querySelector('button');
    button.disabled = true;
    try {
      const resp = await fetch(`${base}/admin/auth`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ password: $('password').value }),
      });
      if (!resp.ok) {
        showLogin(resp.status === 400 ? 'Wrong password.' : `Login failed (HTTP ${resp.status}).`);
        return;
      }
      token = (await resp.json()).token;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('password').value = '';
      showApp();
    } catch (err) {
      showLogin(`Login failed: ${err.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // ------------------------------------------------------------------ nodes

  async function refreshNodes() {
    let reply;
    try {
      reply = await api('info', {});
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin('Session expired: log in again.');
      $('updated').textContent = `update failed: ${err.message}`;
      return;
    }
    if (reply.error) {
      $('updated').textContent = `info: ${reply.error.message}`;
      return;
    }
    const nodes = [...reply.result.nodes].sort((a, b) => a.name.localeCompare(b.name));
    const body = $('nodes').tBodies[0];
    body.replaceChildren(
      ...nodes.map((n) =>
        el(
          'tr',
          { 'data-node': n.uid },
          el('td', { class: 'name' }, n.name, el('small', {}, n.uid)),
          el('td', { 'data-label': 'Version' }, n.version),
          el('td', { 'data-label': 'Uptime' }, uptime(n.uptime || 0)),
          el('td', { class: 'num', 'data-label': 'Clients' }, n.num_clients),
          el('td', { class: 'num', 'data-label': 'Users' }, n.num_users),
          el('td', { class: 'num', 'data-label': 'Subscriptions' }, n.num_subs),
          el('td', { class: 'num', 'data-label': 'Channels' }, n.num_channels),
        ),
      ),
    );
    const sum = (key) => nodes.reduce((acc, n) => acc + (n[key] || 0), 0);
    $('totals').replaceChildren(
      ...[
        ['Clients', sum('num_clients')],
        ['Users', sum('num_users')],
        ['Subscriptions', sum('num_subs')],
        ['Channels', sum('num_channels')],
      ].map(([label, value]) => el('div', { class: 'total' }, el('b', {}, value), el('span', {}, label))),
    );
    $('node-count').textContent = nodes.length;
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  // ---------------------------------------------------------------- channel

  async function inspectChannel(event) {
    event.preventDefault();
    const view = (event.submitter && event.submitter.dataset.view) || 'presence';
    const channel = $('channel').value.trim();
    const out = $('channel-view');
    let reply;
    try {
      reply =
        view === 'presence'
          ? await api('presence', { channel })
          : await api('history', { channel, limit: 20, reverse: true });
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin('Session expired: log in again.');
      out.replaceChildren(el('p', { class: 'error' }, err.message));
      return;
    }
    if (reply.error) {
      out.replaceChildren(el('p', { class: 'error' }, `${view}: ${reply.error.code} ${reply.error.message}`));
      return;
    }
    if (view === 'presence') {
      const clients = Object.values(reply.result.presence || {});
      out.replaceChildren(
        el('p', { class: 'muted', 'data-testid': 'presence-count' }, `${clients.length} connected to ${channel}`),
        el(
          'ul',
          {},
          ...clients.map((c) => el('li', {}, 'user ', el('b', {}, c.user || '(anonymous)'), ' · client ', el('code', {}, c.client))),
        ),
      );
    } else {
      const pubs = reply.result.publications || [];
      out.replaceChildren(
        el('p', { class: 'muted' }, `${pubs.length} latest publications in ${channel} (newest first)`),
        el(
          'ul',
          {},
          ...pubs.map((p) => el('li', {}, el('span', { class: 'pill' }, p.offset ?? ''), ' ', el('code', {}, JSON.stringify(p.data)))),
        ),
      );
    }
  }

  // ---------------------------------------------------------------- actions

  function showFields() {
    const wanted = FIELDS[$('method').value];
    for (const field of document.querySelectorAll('.field')) {
      field.hidden = !wanted.includes(field.dataset.for);
    }
  }

  function params(method) {
    const form = $('action-form');
    const value = (name) => form.elements[name].value.trim();
    const out = {};
    for (const name of FIELDS[method]) {
      if (name === 'data') out.data = JSON.parse(form.elements.data.value);
      else if (name === 'channels') out.channels = value('channels').split(',').map((c) => c.trim()).filter(Boolean);
      else if (name === 'limit') out.limit = Number(value('limit') || 0);
      else if (value(name)) out[name] = value(name);
    }
    return out;
  }

  async function runAction(event) {
    event.preventDefault();
    const method = $('method').value;
    const status = $('result-status');
    const result = $('result');
    let body;
    try {
      body = params(method);
    } catch (err) {
      status.className = 'pill err';
      status.textContent = 'bad data';
      result.textContent = `Data is not JSON: ${err.message}`;
      return;
    }
    $('run').disabled = true;
    try {
      const reply = await api(method, body);
      const failed = Boolean(reply.error);
      status.className = failed ? 'pill err' : 'pill ok';
      status.textContent = failed ? `error ${reply.error.code}` : `${method} ok`;
      result.textContent = JSON.stringify(failed ? reply.error : reply.result, null, 2);
      refreshNodes();
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin('Session expired: log in again.');
      status.className = 'pill err';
      status.textContent = 'failed';
      result.textContent = err.message;
    } finally {
      $('run').disabled = false;
    }
  }

  // ------------------------------------------------------------------ start

  async function start() {
    $('login-form').addEventListener('submit', login);
    $('channel-form').addEventListener('submit', inspectChannel);
    $('action-form').addEventListener('submit', runAction);
    $('method').addEventListener('change', showFields);
    $('logout').addEventListener('click', () => showLogin(''));
    showFields();
    const headers = token ? { Authorization: `token ${token}` } : {};
    try {
      const init = await (await fetch(`${base}/admin/init`, { headers })).json();
      insecure = init.insecure;
      if (init.authenticated) return showApp();
    } catch (err) {
      return showLogin(`Cannot reach the server: ${err.message}`);
    }
    showLogin('');
  }

  start();
})();
