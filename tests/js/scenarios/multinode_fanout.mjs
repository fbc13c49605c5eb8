// Two clients on two different nodes of one cluster: publications (client-side publish on
// each node), join events and presence must span both nodes.
// Usage: node multinode_fanout.mjs <ws-url-a> <ws-url-b> <token-a> <token-b> <channel>
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [urlA, urlB, tokenA, tokenB, channel] = argv;

main(async () => {
  const a = client(urlA, { token: tokenA });
  const b = client(urlB, { token: tokenB });
  const ctxA = await connect(a);
  const ctxB = await connect(b);
  const subA = a.newSubscription(channel, { joinLeave: true });
  const subB = b.newSubscription(channel, { joinLeave: true });
  const gotA = [];
  const gotB = [];
  const joinsA = [];
  subA.on('publication', (p) => gotA.push(p.data.from));
  subB.on('publication', (p) => gotB.push(p.data.from));
  subA.on('join', (ctx) => joinsA.push(ctx.info.client));
  await subscribe(subA);
  await subscribe(subB);
  await subA.publish({ from: 'a' });
  await subB.publish({ from: 'b' });
  await until(() => gotA.length === 2 && gotB.length === 2, 5000, 'both publications on both');
  await until(() => joinsA.includes(ctxB.client), 5000, 'the join from the other node');
  const presence = await subA.presence();
  const stats = await subA.presenceStats();
  a.disconnect();
  b.disconnect();
  return {
    clients: { a: ctxA.client, b: ctxB.client },
    gotA: gotA.sort(),
    gotB: gotB.sort(),
    joinsA,
    presence: Object.keys(presence.clients).sort(),
    stats: { clients: stats.numClients, users: stats.numUsers },
  };
});
