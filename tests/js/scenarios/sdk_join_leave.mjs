// Join/leave seen by a subscriber while a second client subscribes and then disconnects.
// Usage: node sdk_join_leave.mjs <ws-url> <token u1> <token u2> <channel>
import { argv, collect, main, sleep } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [url, token1, token2, channel] = argv;
const who = (ctx) => ({ user: ctx.info.user, client: ctx.info.client });

main(async () => {
  const c1 = client(url, { token: token1 });
  const id1 = (await connect(c1)).client;
  const s1 = c1.newSubscription(channel);
  const joins = collect(s1, 'join');
  const leaves = collect(s1, 'leave');
  await subscribe(s1);

  const c2 = client(url, { token: token2 });
  const id2 = (await connect(c2)).client;
  await subscribe(c2.newSubscription(channel));
  await until(() => joins.some((j) => j.info.user === 'u2'), 5000, 'join of u2');
  c2.disconnect();
  await until(() => leaves.length > 0, 5000, 'leave of u2');
  await sleep(200);
  c1.disconnect();
  return { ids: [id1, id2], joins: joins.map(who), leaves: leaves.map(who) };
});
