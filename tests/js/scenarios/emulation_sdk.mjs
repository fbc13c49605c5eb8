// centrifuge-js over the emulation transports (http_stream, sse) with an absolute
// emulationEndpoint (set by makeClient from the first http endpoint).
// Usage: node emulation_sdk.mjs <mode> <base-url> <token> <channel> [transport] [protobuf]
//   features  connect, subscribe, receive (server publish via RPC), publish, presence, history
//   recovery  the server drops the stream (no disconnect push) and publishes meanwhile;
//             the client reconnects over the same transport and recovers
//   fallback  the first transport is a WebSocket that is refused; http_stream takes over
// RPCs (tests/interop/test_emulation.py): publish {channel, items}; drop_and_publish
// {channel, items} closes this client's stream, then publishes items.
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [mode, base, token, channel, transportArg = 'http_stream', protobufArg = ''] = argv;
const protobuf = protobufArg === 'protobuf';
const wsBase = base.replace(/^http/, 'ws');

function endpoints() {
  const emulated = { transport: transportArg, endpoint: `${base}/connection/${transportArg}` };
  if (mode === 'fallback') {
    return [{ transport: 'websocket', endpoint: `${wsBase}/connection/websocket` }, emulated];
  }
  return [emulated];
}

const pubsOf = (events) => events.filter((e) => e.pub !== undefined);

// The protobuf build carries data as bytes: JSON-encode what we send, decode what we get.
const enc = (value) => (protobuf ? new TextEncoder().encode(JSON.stringify(value)) : value);
const dec = (data) => (protobuf ? JSON.parse(new TextDecoder().decode(data)) : data);
const num = (v) => (v !== null && typeof v === 'object' && v.toNumber ? v.toNumber() : v);
const rpc = async (c, method, data) => dec((await c.rpc(method, enc(data))).data);
const pubEvent = (p) => ({ pub: num(p.offset), n: dec(p.data).n });

async function features(c) {
  const connected = await connect(c);
  const s = c.newSubscription(channel);
  const events = [];
  s.on('publication', (p) => events.push(pubEvent(p)));
  const subscribed = await subscribe(s);
  await rpc(c, 'publish', { channel, items: [{ n: 1 }, { n: 2 }] });
  await until(() => pubsOf(events).length === 2, 5000, 'server publications');
  await s.publish(enc({ n: 3 }));
  await until(() => pubsOf(events).length === 3, 5000, 'own publication');
  const presence = await s.presence();
  const stats = await s.presenceStats();
  const history = await s.history({ limit: 10 });
  const reply = await rpc(c, 'publish', { channel: 'chat:other', items: [] });
  c.disconnect();
  return {
    transport: connected.transport,
    session: typeof connected.client === 'string' && connected.client.length > 0,
    subscribed: {
      recoverable: subscribed.recoverable,
      offset: num(subscribed.streamPosition?.offset),
    },
    events,
    presenceUsers: Object.values(presence.clients).map((v) => v.user),
    stats: { numClients: stats.numClients, numUsers: stats.numUsers },
    history: history.publications.map((p) => dec(p.data).n),
    rpc: reply,
  };
}

async function recovery(c) {
  const connected = await connect(c);
  const s = c.newSubscription(channel);
  const events = [];
  s.on('publication', (p) => events.push(pubEvent(p)));
  s.on('subscribed', (ctx) =>
    events.push({ subscribed: { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered } }),
  );
  await subscribe(s);
  await rpc(c, 'publish', { channel, items: [{ n: 1 }] });
  await until(() => pubsOf(events).length === 1, 5000, 'first publication');
  const reconnecting = waitFor(c, 'connecting', 5000);
  const reconnected = waitFor(c, 'connected', 8000);
  const resubscribed = waitFor(s, 'subscribed', 8000);
  rpc(c, 'drop_and_publish', { channel, items: [{ n: 2 }, { n: 3 }] }).catch(() => {});
  const conn = await reconnecting;
  const again = await reconnected;
  await resubscribed;
  await rpc(c, 'publish', { channel, items: [{ n: 4 }] });
  await until(() => pubsOf(events).some((e) => e.n === 4), 5000, 'publication after recovery');
  c.disconnect();
  return {
    transports: [connected.transport, again.transport],
    connecting: { code: conn.code, reason: conn.reason },
    events,
  };
}

async function fallback(c) {
  const errors = [];
  c.on('error', (ctx) => errors.push({ type: ctx.type, transport: ctx.transport }));
  const connected = await connect(c, 8000);
  const reply = await rpc(c, 'publish', { channel, items: [] });
  c.disconnect();
  return { transport: connected.transport, rpc: reply, errors };
}

main(async () => {
  const c = client(endpoints(), { token, protobuf });
  if (mode === 'features') return features(c);
  if (mode === 'recovery') return recovery(c);
  if (mode === 'fallback') return fallback(c);
  throw new Error(`unknown mode ${mode}`);
});
