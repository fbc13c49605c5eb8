// Shared poll subscriptions (Centrifugo v6.8+): track keys with HMAC-signed batches (signed
// here exactly as Centrifugo's docs tell a backend to), cold-key data, changes, a second
// tracker of the same key, removal, untrack, reconnect replay with cached signatures,
// a forged signature (103), an expired one (109, then getSignature), too many keys (106),
// and a versioned namespace with a direct publish. JSON or Protobuf.
// Usage: node sdk_shared_poll.mjs <ws-url> <token u1> <token u2> <json|protobuf> <secret>
// RPCs (test backend state): set {key, data}, remove {key}, reset_calls, calls,
// drop_and_set {key, data} (disconnects this user with 3011 first), publish {key, data, version}.
import crypto from 'node:crypto';
import { argv, main, sleep } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';
import { dec, enc, num } from './protobuf_util.mjs';

const [url, token, otherToken, mode, secret] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);
const rpc = async (c, method, body) => unpack((await c.rpc(method, pack(body))).data);

function sign(key, user, channel, keys, { ttl = 60, now = Math.floor(Date.now() / 1000) } = {}) {
  const exp = now + ttl;
  const kh = crypto.createHash('sha256').update(keys.join('\x00')).digest('hex');
  const payload = `${now}\0${exp}\0${user}\0${channel}\0${kh}`;
  const mac = crypto.createHmac('sha256', key).update(payload).digest('hex');
  return `${now}:${exp}:${mac}`;
}

function pollSub(c, user, channel, { key = secret, log, errors, signed } = {}) {
  const s = c.newSharedPollSubscription(channel, {
    getSignature: async ({ keys }) => {
      if (signed) signed.n += 1;
      return { keys, signature: sign(key, user, channel, keys) };
    },
  });
  s.on('update', (u) =>
    log.push({ key: u.key, removed: !!u.removed, data: u.removed ? null : unpack(u.data), version: num(u.version) }),
  );
  s.on('error', (e) => errors.push({ channel, type: e.type, code: e.error?.code }));
  return s;
}

const last = (log, key) => [...log].reverse().find((u) => u.key === key);

main(async () => {
  const c1 = client(url, { token, protobuf });
  const c2 = client(url, { token: otherToken, protobuf });
  await connect(c1);
  await connect(c2);
  const errors = [];
  const log1 = [];
  const signed1 = { n: 0 };

  // cold keys: data arrives right after track (no wait for the interval)
  const s1 = pollSub(c1, 'u1', 'votes:feed', { log: log1, errors, signed: signed1 });
  await subscribe(s1);
  s1.track(['a', 'b']);
  await until(() => last(log1, 'a') && last(log1, 'b'), 5000, 'cold keys');
  const cold = { a: last(log1, 'a').data, b: last(log1, 'b').data };

  // a change on the backend arrives with a newer version
  const va = last(log1, 'a').version;
  await rpc(c1, 'set', { key: 'a', data: { votes: 2 } });
  await until(() => last(log1, 'a').data.votes === 2, 5000, 'change of a');
  const versionAdvanced = last(log1, 'a').version > va;

  // a second client tracking the same key gets its current data
  const log2 = [];
  const s2 = pollSub(c2, 'u2', 'votes:feed', { log: log2, errors });
  await subscribe(s2);
  s2.track(['a']);
  await until(() => last(log2, 'a'), 5000, 'second tracker');
  const second = last(log2, 'a').data;

  // steady state: which keys each backend call carried
  await rpc(c1, 'reset_calls', {});
  await sleep(1500);
  const calls = await rpc(c1, 'calls', {});

  // removal from the backend
  await rpc(c1, 'remove', { key: 'b' });
  await until(() => last(log1, 'b').removed, 5000, 'removal of b');
  const tracked = [...s1.trackedKeys()].sort();

  // untrack: s1 stops getting a, s2 still does
  s1.untrack(['a']);
  await sleep(200);
  const n1 = log1.length;
  await rpc(c1, 'set', { key: 'a', data: { votes: 3 } });
  await until(() => last(log2, 'a').data.votes === 3, 5000, 'a for s2');
  await sleep(700);
  const afterUntrack = log1.slice(n1).map((u) => u.key);

  // reconnect replay: tracked keys come back with their cached signature and versions
  s1.track(['c']);
  await until(() => last(log1, 'c'), 5000, 'c');
  const signedBefore = signed1.n;
  const resubscribed = new Promise((resolve) => s1.once('subscribed', resolve));
  rpc(c1, 'drop_and_set', { key: 'c', data: { votes: 9 } }).catch(() => {});
  await resubscribed;
  await until(() => last(log1, 'c').data.votes === 9, 5000, 'c after reconnect');
  const replay = { getSignatureCalls: signed1.n - signedBefore };

  // a forged signature (another secret): 103, nothing tracked
  const logF = [];
  const forged = pollSub(c2, 'u2', 'votes:forged', { key: 'not-the-secret', log: logF, errors });
  await subscribe(forged);
  forged.track(['x']);
  await until(() => errors.some((e) => e.channel === 'votes:forged'), 5000, 'forged refused');

  // an expired signature: 109, the SDK asks getSignature again and then gets the data
  const logE = [];
  const signedE = { n: 0 };
  const expired = pollSub(c2, 'u2', 'votes:exp', { log: logE, errors, signed: signedE });
  await subscribe(expired);
  const old = Math.floor(Date.now() / 1000) - 120;
  expired.track([{ key: 'e', version: 0 }], sign(secret, 'u2', 'votes:exp', ['e'], { now: old, ttl: 60 }));
  await until(() => last(logE, 'e'), 8000, 'data after an expired signature');

  // more keys than max_keys_per_connection (4): 106
  const logL = [];
  const big = pollSub(c1, 'u1', 'votes:big', { log: logL, errors });
  await subscribe(big);
  big.track(['k1', 'k2', 'k3', 'k4', 'k5']);
  await until(() => errors.some((e) => e.channel === 'votes:big'), 5000, 'limit refused');

  // versioned namespace: the backend's versions, then a direct publish
  const logV = [];
  const sv = pollSub(c2, 'u2', 'prices:live', { log: logV, errors });
  await subscribe(sv);
  sv.track(['p1']);
  await until(() => last(logV, 'p1'), 5000, 'versioned data');
  const polled = last(logV, 'p1');
  await rpc(c2, 'publish', { channel: 'prices:live', key: 'p1', data: { price: 42 }, version: 100 });
  await until(() => last(logV, 'p1').version === 100, 5000, 'published version');
  await rpc(c2, 'publish', { channel: 'prices:live', key: 'p1', data: { price: 1 }, version: 50 });
  await sleep(500);

  c1.disconnect();
  c2.disconnect();
  return {
    // the SDK keeps the subscribe reply's epoch privately (it resets versions when it changes)
    epochs: { versionless: s1._sharedPollEpoch.length > 0, versioned: sv._sharedPollEpoch },
    cold,
    versionAdvanced,
    second,
    calls,
    tracked,
    afterUntrack,
    replay,
    forgedUpdates: logF.length,
    errors: errors.map(({ channel, type, code }) => ({ channel, type, code })),
    expired: { data: last(logE, 'e').data, getSignatureCalls: signedE.n },
    limitUpdates: logL.length,
    versioned: { polled, published: last(logV, 'p1'), count: logV.length },
  };
});
