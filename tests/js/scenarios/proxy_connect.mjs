// Connect proxy: a token-less client is authenticated by the backend (connect data → user),
// gets the backend's connect data and server-side channels; a denied client gets the
// backend's error as a terminal disconnect.
// Usage: node proxy_connect.mjs <ws-url>
import { argv, collect, main, waitFor } from '../lib.mjs';
import { client, codeReason, connect, until } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'alice' } });
  const subscribed = collect(c, 'subscribed');
  const ctx = await connect(c);
  await until(() => subscribed.length === 1, 5000, 'server-side subscription');
  c.disconnect();

  const d = client(url, { data: { deny: true } });
  const disconnected = waitFor(d, 'disconnected', 5000, ['connected']);
  d.connect();
  const denied = codeReason(await disconnected);
  return {
    client: ctx.client,
    data: ctx.data,
    serverSubs: subscribed.map((s) => s.channel),
    denied,
  };
});
