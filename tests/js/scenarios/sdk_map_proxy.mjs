// Client map publish/remove decided by a map publish/remove proxy (an HTTP backend) and
// by Python handlers (on_map_publish / on_map_remove). JSON or Protobuf.
// Usage: node sdk_map_proxy.mjs <ws-url> <token> <json|protobuf>
import { argv, main } from '../lib.mjs';
import { client, connect, rejection, subscribe, until } from './_util.mjs';
import { dec, enc } from './protobuf_util.mjs';

const [url, token, mode] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);

async function watch(c, channel) {
  const sub = c.newMapSubscription(channel, {});
  const updates = [];
  sub.on('update', (u) => updates.push({ key: u.key, removed: !!u.removed, data: u.removed ? null : unpack(u.data), tags: u.tags }));
  await subscribe(sub);
  return { sub, updates };
}

main(async () => {
  const c = client(url, { token, protobuf });
  await connect(c);
  const proxied = await watch(c, 'proxied:x');
  await proxied.sub.publish('wanted', pack({ v: 1 }));        // the proxy renames it, adds tags
  const deniedRemove = await rejection(proxied.sub.remove('owned-wanted')); // the proxy refuses
  await until(() => proxied.updates.length === 1, 5000, 'proxied publish');

  const handled = await watch(c, 'handled:x');
  await handled.sub.publish('k', pack({ v: 1 }));              // the handler replaces the data
  const refused = await rejection(handled.sub.publish('forbidden', pack({ v: 2 })));
  await handled.sub.remove('k');                               // the handler allows (None → flags)
  await until(() => handled.updates.length === 2, 5000, 'handled publish and remove');
  c.disconnect();
  return {
    proxied: proxied.updates,
    deniedRemove: deniedRemove.code,
    handled: handled.updates.map(({ key, removed, data }) => ({ key, removed, data })),
    refused: refused.code,
  };
});
