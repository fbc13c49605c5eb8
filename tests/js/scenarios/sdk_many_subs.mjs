// Clients in a row, each subscribing to several token-protected channels whose tokens arrive
// after a random 0-100 ms, then unsubscribing and disconnecting: the interleaving of
// centrifuge-js's own suite ("subscribes and unsubscribes from many subs"), looped, over
// websocket, http_stream and sse at once (one chain of clients per transport).
// Usage: node sdk_many_subs.mjs <base-http-url> <connection token> <{channel: sub token}> <rounds>
// Reports, per transport, the rounds that ended with every subscription subscribed and then
// unsubscribed with code 0, and a description of each round that did not.
import { argv, main, sleep } from '../lib.mjs';
import { client } from './_util.mjs';

const [base, token, tokensJson, roundsArg] = argv;
const tokens = JSON.parse(tokensJson);
const channels = Object.keys(tokens);
const rounds = Number.parseInt(roundsArg, 10);
const READY_MS = 3000; // a round takes ~150 ms; the SDK suite allows 5 s for five rounds

const endpoints = {
  websocket: `${base.replace(/^http/, 'ws')}/connection/websocket`,
  http_stream: `${base}/connection/http_stream`,
  sse: `${base}/connection/sse`,
};

async function round(transport) {
  const started = Date.now();
  const c = client([{ transport, endpoint: endpoints[transport] }], { token });
  const subs = [];
  const unsubscribed = [];
  const pendingTokens = new Set();
  c.connect();
  for (const channel of channels) {
    const sub = c.newSubscription(channel, {
      getToken: async () => {
        pendingTokens.add(channel);
        await sleep(Math.random() * 100);
        pendingTokens.delete(channel);
        return tokens[channel];
      },
    });
    unsubscribed.push(new Promise((resolve) => sub.on('unsubscribed', resolve)));
    sub.subscribe();
    subs.push(sub);
  }
  const ready = await Promise.allSettled(subs.map((s) => s.ready(READY_MS)));
  const notReady = subs.filter((_, i) => ready[i].status === 'rejected');
  const failure =
    notReady.length > 0 || c.state !== 'connected'
      ? {
          client: c.state,
          notSubscribed: notReady.map((s) => `${s.channel}:${s.state}`),
          tokensPending: [...pendingTokens],
          ms: Date.now() - started,
        }
      : null;
  for (const s of subs) s.unsubscribe();
  c.disconnect();
  const codes = (await Promise.all(unsubscribed)).map((ctx) => ctx.code);
  if (failure === null && codes.some((code) => code !== 0)) return { codes };
  return failure;
}

async function chain(transport) {
  const failures = [];
  let worstMs = 0;
  for (let i = 0; i < rounds; i++) {
    const started = Date.now();
    const failure = await round(transport);
    worstMs = Math.max(worstMs, Date.now() - started);
    if (failure !== null) failures.push({ round: i, ...failure });
  }
  return { ok: rounds - failures.length, failures, worstMs };
}

main(async () => {
  const names = Object.keys(endpoints);
  const results = await Promise.all(names.map(chain));
  return Object.fromEntries(names.map((name, i) => [name, results[i]]));
});
