// Fossil delta on a map channel (per key): pre-seeded state, live updates of two keys
// decoded from deltas, a removal, and catch-up after a forced reconnect. JSON or Protobuf.
// Usage: node sdk_map_delta.mjs <ws-url> <token> <json|protobuf>
// RPCs: map_publish {channel, items: [{key, data}]}, map_remove {channel, keys},
// drop_and_map_publish {channel, items}.
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';
import { dec, enc } from './protobuf_util.mjs';

const [url, token, mode] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);
const channel = 'deltamap:x';
const text = 'a fairly long text that stays the same between versions of one entry';
const doc = (key, n) => ({ key, data: { n, text } });

main(async () => {
  const c = client(url, { token, protobuf });
  await connect(c);
  await c.rpc('map_publish', pack({ channel, items: [doc('a', 0), doc('b', 0)] }));
  const s = c.newMapSubscription(channel, { delta: 'fossil' });
  const syncs = [];
  const updates = [];
  s.on('sync', (ctx) => syncs.push(ctx.entries.map((e) => [e.key, unpack(e.data).n])));
  s.on('update', (u) => updates.push([u.key, u.removed ? null : unpack(u.data).n]));
  await subscribe(s);
  await until(() => syncs.length === 1, 5000, 'sync');
  for (let n = 1; n <= 3; n++) {
    await c.rpc('map_publish', pack({ channel, items: [doc('a', n), doc('b', n)] }));
  }
  await c.rpc('map_remove', pack({ channel, keys: ['b'] }));
  await until(() => updates.length === 7, 5000, 'seven live updates');
  const live = s.deltaStats();

  const resubscribed = waitFor(s, 'subscribed', 8000);
  c.rpc('drop_and_map_publish', pack({ channel, items: [doc('a', 4)] })).catch(() => {});
  await resubscribed;
  await c.rpc('map_publish', pack({ channel, items: [doc('a', 5)] }));
  await until(() => updates.some(([k, n]) => k === 'a' && n === 5), 5000, 'update after recovery');
  c.disconnect();
  return {
    sync: syncs[0],
    updates,
    liveDeltas: live.numDeltaPayloads >= 5,
    after: s.deltaStats().numDeltaPayloads > live.numDeltaPayloads,
  };
});
