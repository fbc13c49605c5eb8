// RPC proxy: methods without a namespace go to the backend with the whole method name;
// an unknown RPC namespace gives 104, a namespace without proxy 108.
// Usage: node proxy_rpc.mjs <ws-url>
import { argv, main } from '../lib.mjs';
import { client, connect, rejection } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'alice' } });
  await connect(c);
  const echo = await c.rpc('echo', { hello: 'world' });
  const whoami = await c.rpc('whoami', {});
  const failed = await rejection(c.rpc('fail', {}));
  const unknownNamespace = await rejection(c.rpc('nope:x', {}));
  const disabledNamespace = await rejection(c.rpc('off:x', {}));
  c.disconnect();
  return { echo: echo.data, whoami: whoami.data, failed, unknownNamespace, disabledNamespace };
});
