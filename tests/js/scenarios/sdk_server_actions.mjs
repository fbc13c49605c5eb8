// Server API actions on this client, triggered through RPCs whose handlers call the API.
// Usage: node sdk_server_actions.mjs disconnect <ws-url> <token>
//        node sdk_server_actions.mjs unsubscribe <ws-url> <token> <channel>
import { argv, main, sleep, waitFor } from '../lib.mjs';
import { client, connect, counter, subscribe } from './_util.mjs';

const [mode, url, token, channel] = argv;

main(async () => {
  const c = client(url, { token });
  const connecting = counter(c, 'connecting');
  await connect(c);
  if (mode === 'disconnect') {
    const disconnected = waitFor(c, 'disconnected');
    c.rpc('disconnect', {}).catch(() => {}); // its reply is never sent
    const ctx = await disconnected;
    const before = connecting.n;
    await sleep(1500);
    return { code: ctx.code, reason: ctx.reason, state: c.state, connectingAfter: connecting.n - before };
  }
  const s = c.newSubscription(channel);
  const subscribing = counter(s, 'subscribing');
  await subscribe(s);
  const unsubscribed = waitFor(s, 'unsubscribed');
  await c.rpc('unsubscribe', { channel });
  const ctx = await unsubscribed;
  const before = subscribing.n;
  await sleep(300);
  const result = {
    code: ctx.code,
    reason: ctx.reason,
    state: s.state,
    subscribingAfter: subscribing.n - before,
    clientState: c.state,
  };
  c.disconnect();
  return result;
});
