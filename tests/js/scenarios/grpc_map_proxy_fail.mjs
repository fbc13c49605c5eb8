// Client map publishes against gRPC map proxies that refuse, fail or disconnect.
// Usage: node grpc_map_proxy_fail.mjs <ws-url> <token> <json|protobuf>
// 'grpcmap:x' goes to a grpcio backend (key 'deny': error 1403, 'fail': gRPC INTERNAL,
// 'kick': disconnect 4501); 'down:x' to an endpoint nobody listens on.
import { argv, main } from '../lib.mjs';
import { client, codeReason, connect, rejection, subscribe, until } from './_util.mjs';
import { enc } from './protobuf_util.mjs';

const [url, token, mode] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);

main(async () => {
  const c = client(url, { token, protobuf });
  const disconnects = [];
  c.on('disconnected', (ctx) => disconnects.push(codeReason(ctx)));
  await connect(c);
  const sub = c.newMapSubscription('grpcmap:x', {});
  await subscribe(sub);
  const down = c.newMapSubscription('down:x', {});
  await subscribe(down);
  const denied = await rejection(sub.publish('deny', pack({ v: 1 })));
  const failed = await rejection(sub.publish('fail', pack({ v: 1 })));
  const unavailable = await rejection(down.publish('k', pack({ v: 1 })));
  const removeUnavailable = await rejection(down.remove('k'));
  const stillConnected = c.state;
  sub.publish('kick', pack({ v: 1 })).catch(() => {});
  await until(() => disconnects.length === 1, 5000, 'disconnect from the proxy');
  return {
    denied: [denied.code, denied.message],
    failed: failed.code,
    unavailable: unavailable.code,
    removeUnavailable: removeUnavailable.code,
    stillConnected,
    disconnect: disconnects[0],
  };
});
