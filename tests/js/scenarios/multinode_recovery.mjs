// Recovery on another node: subscribe on node A and read one publication, disconnect,
// let a client on node B publish two more, then subscribe on node B from the old position.
// Usage: node multinode_recovery.mjs <ws-url-a> <ws-url-b> <token> <channel>
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [urlA, urlB, token, channel] = argv;

main(async () => {
  const a = client(urlA, { token });
  await connect(a);
  const first = a.newSubscription(channel);
  const seen = [];
  first.on('publication', (p) => seen.push({ offset: p.offset, n: p.data.n }));
  const subscribed = await subscribe(first);
  await first.publish({ n: 1 });
  await until(() => seen.length === 1, 5000, 'the first publication');
  const since = { offset: seen[0].offset, epoch: subscribed.streamPosition.epoch };
  a.disconnect();

  const publisher = client(urlB, { token });
  await connect(publisher);
  const pubSub = publisher.newSubscription(channel);
  await subscribe(pubSub);
  await pubSub.publish({ n: 2 });
  await pubSub.publish({ n: 3 });
  publisher.disconnect();

  const b = client(urlB, { token });
  await connect(b);
  const again = b.newSubscription(channel, { since });
  const recoveredPubs = [];
  again.on('publication', (p) => recoveredPubs.push({ offset: p.offset, n: p.data.n }));
  const ctx = await subscribe(again);
  await until(() => recoveredPubs.length === 2, 5000, 'the recovered publications');
  b.disconnect();
  return {
    since,
    wasRecovering: ctx.wasRecovering,
    recovered: ctx.recovered,
    epoch: ctx.streamPosition.epoch,
    recoveredPubs,
  };
});
