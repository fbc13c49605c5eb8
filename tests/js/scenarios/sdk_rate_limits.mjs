// Operation rate limits (client.rate_limit, Centrifugo PRO semantics) seen by the SDK.
// Usage: node sdk_rate_limits.mjs <ws-url> <token>
// The server allows 2 "echo" RPCs a minute and 1 subscribe a second per connection:
// the third RPC is refused with 111; the second subscribe gets a temporary 111, and the
// SDK subscribes again after its backoff.
import { argv, main } from '../lib.mjs';
import { client, connect, rejection, subscribe } from './_util.mjs';

const [url, token] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const rpc = [];
  for (let i = 0; i < 3; i += 1) rpc.push(await rejection(c.rpc('echo', { i })));
  await subscribe(c.newSubscription('chat:a'));
  const second = c.newSubscription('chat:b', { minResubscribeDelay: 300, maxResubscribeDelay: 600 });
  const errors = [];
  second.on('error', (ctx) => errors.push({ type: ctx.type, code: ctx.error.code, message: ctx.error.message }));
  await subscribe(second, 8000);
  const state = second.state;
  c.disconnect();
  return { rpc, subscribeErrors: errors.slice(0, 1), subscribed: state };
});
