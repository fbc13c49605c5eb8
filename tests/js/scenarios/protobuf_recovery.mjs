// The protobuf build: recovery after a server-forced reconnect (3011), publications missed
// meanwhile arrive inside the subscribe reply.
// Usage: node protobuf_recovery.mjs <ws-url> <token> <channel> <missed>
// RPCs: publish {channel, items}; drop_and_publish {channel, items} disconnects this user
// with 3011 and then publishes items (while the client reconnects).
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';
import { dec, enc, num } from './protobuf_util.mjs';

const [url, token, channel, missedArg] = argv;
const missed = Number(missedArg);

main(async () => {
  const c = client(url, { token, protobuf: true });
  const s = c.newSubscription(channel);
  const events = [];
  s.on('publication', (p) => events.push({ pub: num(p.offset), n: dec(p.data).n }));
  s.on('subscribed', (ctx) =>
    events.push({
      subscribed: { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered },
      offset: num(ctx.streamPosition?.offset),
    }),
  );
  const pubs = () => events.filter((e) => e.pub !== undefined);
  await connect(c);
  await subscribe(s);
  await c.rpc('publish', enc({ channel, items: [{ n: 1 }] }));
  await until(() => pubs().length === 1, 5000, 'first publication');

  const reconnecting = waitFor(c, 'connecting');
  const resubscribed = waitFor(s, 'subscribed', 8000);
  const items = Array.from({ length: missed }, (_, i) => ({ n: i + 2 }));
  c.rpc('drop_and_publish', enc({ channel, items })).catch(() => {}); // never answered
  const conn = await reconnecting;
  await resubscribed;
  const last = missed + 2;
  await c.rpc('publish', enc({ channel, items: [{ n: last }] }));
  await until(() => pubs().some((e) => e.n === last), 5000, 'publication after recovery');
  c.disconnect();
  return { connecting: { code: conn.code, reason: conn.reason }, events };
});
