// A subscriber for the outbox consumer tests: collects the publications of one channel
// until one with {last: true} arrives, waits a little longer (a duplicate would show
// up), and reports them all.
// Usage: node outbox_subscriber.mjs <ws-url> <token> <channel>
import { argv, main, sleep } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';

const [url, token, channel] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const sub = c.newSubscription(channel);
  const got = [];
  sub.on('publication', (p) => got.push(p.data));
  await subscribe(sub);
  console.log('subscribed');
  await until(() => got.some((d) => d.last), 20000, 'the last publication');
  await sleep(300);
  c.disconnect();
  return { got };
});
