// Two clients on one channel: client publish with publisher info, then unsubscribe.
// Usage: node sdk_pubsub.mjs <ws-url> <token u1> <token u2> <channel>
import { argv, collect, main, sleep, waitFor } from '../lib.mjs';
import { client, connect, subscribe } from './_util.mjs';

const [url, token1, token2, channel] = argv;

main(async () => {
  const c1 = client(url, { token: token1 });
  const c2 = client(url, { token: token2 });
  const id1 = (await connect(c1)).client;
  await connect(c2);
  const s1 = c1.newSubscription(channel);
  const s2 = c2.newSubscription(channel);
  await subscribe(s1);
  await subscribe(s2);
  const got2 = collect(s2, 'publication');

  const own = waitFor(s1, 'publication');
  const other = waitFor(s2, 'publication');
  const publishReply = await s1.publish({ text: 'hi' });
  const [p1, p2] = await Promise.all([own, other]);

  const unsubscribed = waitFor(s2, 'unsubscribed');
  s2.unsubscribe();
  const u = await unsubscribed;
  await c2.rpc('sum', { a: 0, b: 0 }); // the unsubscribe command has been processed
  const stats = await s1.presenceStats();

  const own2 = waitFor(s1, 'publication');
  await s1.publish({ text: 'bye' });
  await own2;
  await sleep(200);
  c1.disconnect();
  c2.disconnect();
  const pub = (p) => ({ channel: p.channel, data: p.data, user: p.info?.user, client: p.info?.client });
  return {
    id1,
    publishReply,
    own: pub(p1),
    other: pub(p2),
    unsubscribed: { code: u.code, reason: u.reason, state: s2.state },
    statsAfterUnsubscribe: stats,
    received2: got2.map((p) => p.data),
  };
});
