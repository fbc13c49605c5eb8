// Async messages both ways: client send() to a Python on_message handler, which answers
// with node.send() → the client's `message` event.
// Usage: node sdk_messages.mjs <ws-url> <token>
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect } from './_util.mjs';

const [url, token] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const message = waitFor(c, 'message');
  await c.send({ ping: 'hello' });
  const ctx = await message;
  c.disconnect();
  return { data: ctx.data };
});
