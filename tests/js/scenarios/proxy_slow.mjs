// A backend slower than the proxy timeout: rpc, publish and subscribe fail with the
// temporary error 100 within the timeout, and the connection stays usable.
// Usage: node proxy_slow.mjs <ws-url>
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, rejection } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'dave' } });
  await connect(c);
  const started = Date.now();
  const slowRpc = await rejection(c.rpc('slow:x', {}));
  const rpcMs = Date.now() - started;
  const slowPublish = await rejection(c.publish('slow:chan', { a: 1 }));
  const sub = c.newSubscription('slow:chan');
  const firstError = waitFor(sub, 'error', 5000, ['subscribed']);
  sub.subscribe();
  const subError = await firstError;
  sub.unsubscribe();
  const echo = await c.rpc('echo', { still: 'here' });
  const result = {
    slowRpc,
    rpcMs,
    slowPublish,
    slowSubscribe: subError.error.code,
    echo: echo.data,
    state: c.state,
  };
  c.disconnect();
  return result;
});
