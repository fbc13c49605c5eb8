// The protobuf build over WebSocket: connect, subscribe, a Python publication, a binary
// publish, history, presence, RPC. Payloads are bytes (Uint8Array) in this build.
// Usage: node protobuf_basic.mjs <ws-url> <token> <channel> <hex of binary payload>
// RPCs: publish {channel, items} (JSON) publishes items from Python; sum {a, b}.
import { argv, main } from '../lib.mjs';
import { client, connect, rejection, subscribe, until } from './_util.mjs';
import { dec, enc, hex, num, unhex } from './protobuf_util.mjs';

const [url, token, channel, binaryHex] = argv;

main(async () => {
  const c = client(url, { token, protobuf: true });
  const connected = await connect(c);
  const s = c.newSubscription(channel);
  const pubs = [];
  s.on('publication', (p) =>
    pubs.push({
      bytes: p.data instanceof Uint8Array,
      hex: hex(p.data),
      offset: num(p.offset),
      user: p.info?.user,
      client: p.info?.client,
    }),
  );
  const subscribed = await subscribe(s);

  const published = await c.rpc('publish', enc({ channel, items: [{ text: 'from python' }] }));
  await until(() => pubs.length === 1, 5000, 'publication from Python');

  await s.publish(unhex(binaryHex));
  await until(() => pubs.length === 2, 5000, 'binary publication');

  const history = await s.history({ limit: 10 });
  const presence = await s.presence();
  const stats = await s.presenceStats();
  const sum = await c.rpc('sum', enc({ a: 2, b: 3 }));
  const unknown = await rejection(c.rpc('no_such_method', enc({})));
  c.disconnect();
  return {
    transport: connected.transport,
    client: connected.client,
    subscribed: { recoverable: subscribed.recoverable, positioned: subscribed.positioned },
    publishRpc: { bytes: published.data instanceof Uint8Array, data: dec(published.data) },
    pubs,
    history: {
      publications: history.publications.map((p) => ({ offset: num(p.offset), hex: hex(p.data) })),
      offset: num(history.offset),
      epochSet: Boolean(history.epoch),
    },
    presence: Object.fromEntries(
      Object.entries(presence.clients).map(([k, v]) => [k, { user: v.user, client: v.client }]),
    ),
    stats,
    sum: dec(sum.data),
    unknown,
  };
});
