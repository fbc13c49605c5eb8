// Server-side subscriptions: from the token `channels` claim, then at runtime via the
// server API (RPC `subscribe` calls node.subscribe for this user); client-level events.
// Usage: node sdk_server_subs.mjs <ws-url> <token with channels=[tokenChannel]> <token ch> <runtime ch>
import { argv, collect, main } from '../lib.mjs';
import { client, connect, until } from './_util.mjs';

const [url, token, tokenChannel, runtimeChannel] = argv;

main(async () => {
  const c = client(url, { token });
  const subscribed = collect(c, 'subscribed');
  const pubs = collect(c, 'publication');
  const has = (ch) => () => subscribed.some((s) => s.channel === ch);
  await connect(c);
  await until(has(tokenChannel), 5000, `subscribed ${tokenChannel}`);
  await c.rpc('publish', { channel: tokenChannel, items: [{ n: 1 }] });
  await until(() => pubs.length === 1, 5000, 'publication 1');
  await c.rpc('subscribe', { channel: runtimeChannel });
  await until(has(runtimeChannel), 5000, `subscribed ${runtimeChannel}`);
  await c.rpc('publish', { channel: runtimeChannel, items: [{ n: 2 }] });
  await until(() => pubs.length === 2, 5000, 'publication 2');
  c.disconnect();
  return {
    subscribed: subscribed.map((s) => ({ channel: s.channel, recoverable: s.recoverable })),
    publications: pubs.map((p) => ({ channel: p.channel, data: p.data, offset: p.offset })),
  };
});
