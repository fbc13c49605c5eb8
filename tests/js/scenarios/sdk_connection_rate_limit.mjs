// client.connection_rate_limit seen by centrifuge-js: a handshake refused with 503 is a
// transport error the SDK retries with its backoff, and it connects once the bucket has a
// token again. Usage: node sdk_connection_rate_limit.mjs <ws-url> <token>
import { argv, main } from '../lib.mjs';
import { client, connect } from './_util.mjs';

const [url, token] = argv;

main(async () => {
  const first = client(url, { token });
  await connect(first);
  const second = client(url, { token });
  const errors = [];
  second.on('error', (ctx) => errors.push(ctx.type));
  const started = Date.now();
  await connect(second, 10000);
  const waitedMs = Date.now() - started;
  const result = { first: first.state, second: second.state, errors, waitedMs };
  first.disconnect();
  second.disconnect();
  return result;
});
