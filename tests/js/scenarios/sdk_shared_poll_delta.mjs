// Shared poll with fossil delta (delta: 'fossil'): the first update of a key is whole, the
// next ones are deltas against the version the client holds; a removal still arrives.
// JSON or Protobuf. Usage: node sdk_shared_poll_delta.mjs <ws-url> <token> <json|protobuf> <secret>
// RPCs: set {key, data}, remove {key}.
import crypto from 'node:crypto';
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';
import { dec, enc } from './protobuf_util.mjs';

const [url, token, mode, secret] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);
const channel = 'deltas:doc';

function sign(keys) {
  const now = Math.floor(Date.now() / 1000);
  const kh = crypto.createHash('sha256').update(keys.join('\x00')).digest('hex');
  const payload = `${now}\0${now + 60}\0u1\0${channel}\0${kh}`;
  return `${now}:${now + 60}:${crypto.createHmac('sha256', secret).update(payload).digest('hex')}`;
}

main(async () => {
  const c = client(url, { token, protobuf });
  await connect(c);
  const body = 'lorem ipsum dolor sit amet '.repeat(40);
  await c.rpc('set', pack({ key: 'doc', data: { text: body, n: 0 } }));
  const updates = [];
  const sub = c.newSharedPollSubscription(channel, {
    delta: 'fossil',
    getSignature: async ({ keys }) => ({ keys, signature: sign(keys) }),
  });
  sub.on('update', (u) => updates.push(u.removed ? { removed: true } : (protobuf ? dec(u.data) : u.data)));
  await subscribe(sub);
  sub.track(['doc']);
  await until(() => updates.length === 1, 5000, 'whole data');
  for (let n = 1; n <= 3; n++) {
    await c.rpc('set', pack({ key: 'doc', data: { text: body, n } }));
    await until(() => updates.length === n + 1, 5000, `change ${n}`);
  }
  await c.rpc('remove', pack({ key: 'doc' }));
  await until(() => updates.length === 5, 5000, 'removal');
  c.disconnect();
  return {
    ns: updates.map((u) => (u.removed ? 'removed' : u.n)),
    intact: updates.slice(0, 4).every((u) => u.text === body),
    numFull: sub._deltaNumFull,
    numDelta: sub._deltaNumDelta,
  };
});
