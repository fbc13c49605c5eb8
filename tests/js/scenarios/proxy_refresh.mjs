// Refresh and sub_refresh proxies: the connect proxy grants a connection that expires in
// 2 s and the subscribe proxy a subscription that expires in 2 s; both are extended by
// the backend, so after 3.5 s the client is still connected and subscribed.
// Usage: node proxy_refresh.mjs <ws-url>
import { argv, collect, main, sleep } from '../lib.mjs';
import { client, codeReason, connect, subscribe } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'bob', ttl: 2 } });
  const disconnects = collect(c, 'disconnected');
  await connect(c);
  const sub = c.newSubscription('px:expiring');
  const unsubscribes = collect(sub, 'unsubscribed');
  await subscribe(sub);
  await sleep(3500);
  const echo = await c.rpc('echo', { after: 'expiry' });
  const result = {
    state: c.state,
    subState: sub.state,
    disconnects: disconnects.map(codeReason),
    unsubscribes: unsubscribes.map(codeReason),
    echo: echo.data,
  };
  c.disconnect();
  return result;
});
