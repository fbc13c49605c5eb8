// Redis dies and comes back under two nodes (A and B). X (on A) is recoverable in
// <channel> and misses publications 2 and 3 (published via B while X is away); Y (on A)
// stays subscribed to <stay> throughout; P (on B) drives the server through RPCs:
//   publish {channel, items}: node B publishes;
//   outage {}: node B kills Redis, times a publish that must fail, schedules a restart.
// Usage: node multinode_redis_outage.mjs <ws-a> <ws-b> <tok-x> <tok-y> <tok-p> <channel> <stay>
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [urlA, urlB, tokX, tokY, tokP, channel, stay] = argv;

main(async () => {
  const x = client(urlA, { token: tokX });
  const y = client(urlA, { token: tokY });
  const p = client(urlB, { token: tokP });
  await Promise.all([connect(x), connect(y), connect(p)]);
  const subX = x.newSubscription(channel, { minResubscribeDelay: 100, maxResubscribeDelay: 400 });
  const gotX = [];
  const subErrors = [];
  const subscribedX = [];
  subX.on('publication', (pub) => gotX.push(pub.data.n));
  subX.on('error', (ctx) => subErrors.push(ctx.error.code));
  subX.on('subscribed', (ctx) =>
    subscribedX.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }),
  );
  const subY = y.newSubscription(stay);
  const gotY = [];
  subY.on('publication', (pub) => gotY.push(pub.data.n));
  await subscribe(subX);
  await subscribe(subY);
  await p.rpc('publish', { channel, items: [{ n: 1 }] });
  await until(() => gotX.length === 1, 5000, 'publication 1');

  x.disconnect();
  await p.rpc('publish', { channel, items: [{ n: 2 }, { n: 3 }] });
  const outage = (await p.rpc('outage', {})).data;

  const resubscribed = waitFor(subX, 'subscribed', 15000);
  x.connect(); // the subscription comes back on its own, recovering from offset 1
  await resubscribed;
  await p.rpc('publish', { channel, items: [{ n: 4 }] });
  await p.rpc('publish', { channel: stay, items: [{ n: 5 }] });
  await until(() => gotX.includes(4), 5000, 'publication 4 after the restart');
  await until(() => gotY.includes(5), 5000, 'the stay channel after the restart');
  x.disconnect();
  y.disconnect();
  p.disconnect();
  return { outage, subErrors: [...new Set(subErrors)], subscribedX, gotX, gotY };
});
