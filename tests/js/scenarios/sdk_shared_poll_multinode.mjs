// Shared poll across two nodes: a client of node B tracks a key of a versioned namespace;
// shared_poll_publish called on node A (through an RPC of a client connected there)
// reaches it (the test of the gRPC API gives the same node twice). JSON.
// Usage: node sdk_shared_poll_multinode.mjs <ws-url A> <ws-url B> <token> <secret>
import crypto from 'node:crypto';
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [urlA, urlB, token, secret] = argv;
const channel = 'prices:multi';

function sign(user, keys) {
  const now = Math.floor(Date.now() / 1000);
  const kh = crypto.createHash('sha256').update(keys.join('\x00')).digest('hex');
  const payload = `${now}\0${now + 60}\0${user}\0${channel}\0${kh}`;
  return `${now}:${now + 60}:${crypto.createHmac('sha256', secret).update(payload).digest('hex')}`;
}

main(async () => {
  const a = client(urlA, { token });
  const b = client(urlB, { token });
  await connect(a);
  await connect(b);
  const updates = [];
  const sub = b.newSharedPollSubscription(channel, {
    getSignature: async ({ keys }) => ({ keys, signature: sign('u1', keys) }),
  });
  sub.on('update', (u) => updates.push({ key: u.key, data: u.data, version: u.version }));
  await subscribe(sub);
  sub.track(['p1']);
  await until(() => updates.length === 1, 5000, 'polled data on B');
  await a.rpc('publish', { channel, key: 'p1', data: { price: 7 }, version: 100 });
  await until(() => updates.length === 2, 5000, 'publication from A on B');
  a.disconnect();
  b.disconnect();
  return { updates };
});
