// A centrifuge-js subscriber for the admin page test: it stays subscribed until one
// publication arrives (published from the admin page in a browser) and reports it.
// Usage: node admin_receive.mjs <ws-url> <token> <channel> [linger-ms]
// (linger: how long it stays connected after the publication)
import { argv, main, sleep, waitFor } from '../lib.mjs';
import { client, connect, subscribe } from './_util.mjs';

const [url, token, channel, linger = '0'] = argv;

main(async () => {
  const c = client(url, { token });
  const connected = await connect(c);
  const sub = c.newSubscription(channel);
  const publication = waitFor(sub, 'publication', Number(process.env.JS_TIMEOUT_MS || 20000) - 500);
  await subscribe(sub);
  const pub = await publication;
  await sleep(Number(linger));
  c.disconnect();
  return { client: connected.client, data: pub.data };
});
