// A centrifuge-js map subscriber whose changes come from the gRPC server API (the test
// calls MapPublish/MapRemove once the subscription shows up in Channels).
// Usage: node grpc_map_subscriber.mjs <ws-url> <token> <channel> <updates-expected>
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [url, token, channel, expected] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const s = c.newMapSubscription(channel, {});
  const syncs = [];
  const updates = [];
  s.on('sync', (ctx) => syncs.push(ctx.entries.map((e) => ({ key: e.key, data: e.data }))));
  s.on('update', (u) =>
    updates.push({ key: u.key, removed: !!u.removed, data: u.removed ? null : u.data, tags: u.tags ?? null }),
  );
  await subscribe(s);
  await until(() => syncs.length === 1, 5000, 'sync');
  await until(() => updates.length >= Number(expected), 8000, 'updates from the gRPC API');
  c.disconnect();
  return { sync: syncs[0], updates };
});
