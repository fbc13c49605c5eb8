// RPC to a Python handler and to an unknown method.
// Usage: node sdk_rpc.mjs <ws-url> <token>
import { argv, main } from '../lib.mjs';
import { client, connect, rejection } from './_util.mjs';

const [url, token] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const ok = await c.rpc('sum', { a: 2, b: 3 });
  const unknown = await rejection(c.rpc('no_such_method', {}));
  c.disconnect();
  return { sum: ok.data, unknown };
});
