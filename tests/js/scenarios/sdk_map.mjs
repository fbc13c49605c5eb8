// Map subscriptions (Centrifugo v6.8+): paged state snapshot, live updates, client publish
// and remove, TTL removal, catch-up after a forced reconnect, resubscribe, map_clients
// presence, and the refusals (forbidden publish, wrong subscription type). JSON or Protobuf.
// Usage: node sdk_map.mjs <ws-url> <token u1> <token u2> <json|protobuf>
// RPCs: map_publish {channel, items: [{key, data}]}, map_remove {channel, keys},
// drop_and_map_publish {channel, items} (disconnects this user with 3011 first).
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, refused, rejection, subscribe, until } from './_util.mjs';
import { dec, enc, num } from './protobuf_util.mjs';

const [url, token, otherToken, mode] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);
const channel = 'board:main';

const entries = (list) =>
  Object.fromEntries(list.map((e) => [e.key, unpack(e.data)]).sort(([a], [b]) => (a < b ? -1 : 1)));

main(async () => {
  const c = client(url, { token, protobuf });
  const other = client(url, { token: otherToken, protobuf });
  await connect(c);
  await connect(other);

  // 250 keys before anyone subscribes: three state pages of 100
  const initial = Array.from({ length: 250 }, (_, i) => ({ key: `k${String(i).padStart(3, '0')}`, data: { v: i } }));
  await c.rpc('map_publish', pack({ channel, items: initial }));

  const s = c.newMapSubscription(channel, { limit: 100 });
  const syncs = [];
  const updates = [];
  s.on('sync', (ctx) => syncs.push(entries(ctx.entries)));
  s.on('update', (u) => updates.push({ key: u.key, removed: !!u.removed, data: u.removed ? null : unpack(u.data), offset: num(u.offset) }));
  const subscribed = [];
  s.on('subscribed', (ctx) =>
    subscribed.push({ recoverable: ctx.recoverable, recovered: ctx.recovered, wasRecovering: ctx.wasRecovering }),
  );
  await subscribe(s);
  await until(() => syncs.length === 1, 5000, 'first sync');
  const firstSync = syncs[0];

  // live: a server-side publish, a client publish, a client remove
  await c.rpc('map_publish', pack({ channel, items: [{ key: 'k000', data: { v: 'changed' } }] }));
  await s.publish('mine', pack({ from: 'client' }));
  await s.remove('k001');
  await until(() => updates.length >= 3, 5000, 'three live updates');

  // a second client sees the same state
  const s2 = other.newMapSubscription(channel, {});
  const other_syncs = [];
  s2.on('sync', (ctx) => other_syncs.push(entries(ctx.entries)));
  await subscribe(s2);
  await until(() => other_syncs.length === 1, 5000, 'second client sync');

  // catch-up after a forced reconnect: the missed changes come as updates
  const before = updates.length;
  const resubscribed = waitFor(s, 'subscribed', 8000);
  c.rpc('drop_and_map_publish', pack({ channel, items: [{ key: 'k002', data: { v: 'missed' } }] })).catch(() => {});
  await resubscribed;
  await until(() => updates.length > before, 5000, 'missed update after reconnect');
  const afterReconnect = updates.slice(before);

  // unsubscribe / subscribe again: the SDK recovers from its position (no sync, the
  // changes made meanwhile come as updates)
  s.unsubscribe();
  await c.rpc('map_remove', pack({ channel, keys: ['k003'] }));
  const syncsBefore = syncs.length;
  const beforeResub = updates.length;
  await subscribe(s);
  await until(() => updates.length > beforeResub, 5000, 'update after resubscribe');
  const resubUpdates = updates.slice(beforeResub).map(({ key, removed }) => ({ key, removed }));
  const resyncs = syncs.length - syncsBefore;

  // TTL: ephemeral namespace, key_ttl 1s; the expiry comes as a removal update
  const cur = c.newMapSubscription('cursors:room', {});
  const curUpdates = [];
  cur.on('update', (u) => curUpdates.push({ key: u.key, removed: !!u.removed }));
  await subscribe(cur);
  await cur.publish('ignored', pack({ x: 1 })); // client_key=client_id: the key is the client id
  await until(() => curUpdates.some((u) => u.removed), 6000, 'TTL removal');

  // map_clients presence of board:main (prefix "clients:")
  const pres = other.newMapClientsSubscription(`clients:${channel}`, {});
  const presSync = [];
  pres.on('sync', (ctx) => presSync.push(ctx.entries.map((e) => e.key).sort()));
  await subscribe(pres);
  await until(() => presSync.length === 1, 5000, 'presence sync');

  // map_users presence of board:main (prefix "users:"): one entry per user
  const users = other.newMapUsersSubscription(`users:${channel}`, {});
  const usersSync = [];
  users.on('sync', (ctx) => usersSync.push(ctx.entries.map((e) => e.key).sort()));
  await subscribe(users);
  await until(() => usersSync.length === 1, 5000, 'users presence sync');

  // tags filter: state, then live changes, only for the matching entries
  await c.rpc('map_publish', pack({ channel: 'tagged:x', items: [
    { key: 'a1', data: { n: 1 }, tags: { kind: 'a' } },
    { key: 'b1', data: { n: 2 }, tags: { kind: 'b' } },
  ] }));
  const tf = other.newMapSubscription('tagged:x', { tagsFilter: { key: 'kind', cmp: 'eq', val: 'a' } });
  const tfSync = [];
  const tfUpdates = [];
  tf.on('sync', (ctx) => tfSync.push(ctx.entries.map((e) => e.key)));
  tf.on('update', (u) => tfUpdates.push(u.key));
  await subscribe(tf);
  await until(() => tfSync.length === 1, 5000, 'filtered sync');
  await c.rpc('map_publish', pack({ channel: 'tagged:x', items: [
    { key: 'b2', data: { n: 3 }, tags: { kind: 'b' } },
    { key: 'a2', data: { n: 4 }, tags: { kind: 'a' } },
  ] }));
  await until(() => tfUpdates.includes('a2'), 5000, 'filtered update');

  // refusals
  const ro = other.newMapSubscription('readonly:x', {});
  await subscribe(ro);
  const forbiddenPublish = await rejection(ro.publish('k', pack({ a: 1 })));
  const wrongType = await refused(other.newSubscription('board:stream'));
  const wrongType2 = await refused(other.newMapSubscription('chat:x', {}));

  c.disconnect();
  other.disconnect();
  return {
    firstSyncSize: Object.keys(firstSync).length,
    firstSyncSample: [firstSync.k000, firstSync.k249],
    live: updates.slice(0, 3).map(({ key, removed, data }) => ({ key, removed, data })),
    otherSyncSize: Object.keys(other_syncs[0]).length,
    otherSyncSample: [other_syncs[0].k000, other_syncs[0].mine, other_syncs[0].k001],
    afterReconnect: afterReconnect.map(({ key, data }) => ({ key, data })),
    subscribed,
    resubUpdates,
    resyncs,
    curUpdates: curUpdates.map((u) => u.removed),
    presence: presSync[0].length,
    users: usersSync[0],
    tagged: { sync: tfSync[0], updates: tfUpdates },
    forbiddenPublish: forbiddenPublish.code,
    wrongType: wrongType.code,
    wrongType2: wrongType2.code,
  };
});
