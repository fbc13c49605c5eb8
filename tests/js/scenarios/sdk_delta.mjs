// Fossil delta compression (`delta: 'fossil'`): many live publications, then a recovery
// after a forced reconnect, then live again; every decoded payload is reported in order.
// Usage: node sdk_delta.mjs <websocket|http_stream|sse> <base-url> <token> <channel> <json|protobuf> <count>
// RPCs (tests/interop/test_delta_sdks.py): publish_docs {channel, count} publishes the next
// `count` versions of a document with delta; drop_and_publish_docs {channel, count}
// disconnects this user with 3011 first.
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, subscribe, until } from './_util.mjs';
import { dec, enc } from './protobuf_util.mjs';

const [transport, base, token, channel, mode, countArg] = argv;
const protobuf = mode === 'protobuf';
const count = Number.parseInt(countArg, 10);
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);

const endpoint =
  transport === 'websocket'
    ? `${base.replace(/^http/, 'ws')}/connection/websocket`
    : [{ transport, endpoint: `${base}/connection/${transport}` }];

main(async () => {
  const c = client(endpoint, { token, protobuf });
  const s = c.newSubscription(channel, { delta: 'fossil' });
  const data = [];
  const subscribed = [];
  s.on('publication', (p) => data.push(JSON.stringify(unpack(p.data))));
  s.on('subscribed', (ctx) =>
    subscribed.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }),
  );
  const connected = await connect(c);
  await subscribe(s);

  await c.rpc('publish_docs', pack({ channel, count }));
  await until(() => data.length === count, 15000, `${count} live publications`);

  const reconnecting = waitFor(c, 'connecting');
  const resubscribed = waitFor(s, 'subscribed', 8000);
  c.rpc('drop_and_publish_docs', pack({ channel, count: 5 })).catch(() => {});
  await reconnecting;
  await resubscribed;
  await until(() => data.length === count + 5, 5000, 'recovered publications');
  await c.rpc('publish_docs', pack({ channel, count: 3 }));
  await until(() => data.length === count + 8, 5000, 'publications after recovery');
  c.disconnect();
  return { transport: connected.transport, subscribed, data };
});
