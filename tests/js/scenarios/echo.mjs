// Harness self-test: connect with plain `ws` (not centrifuge), send a text, report the echo.
// Usage: node scenarios/echo.mjs <ws-url> <text>
import { argv, Centrifuge, CentrifugeProtobuf, main, waitFor, WebSocket } from '../lib.mjs';

main(async () => {
  const [url, text] = argv;
  const ws = new WebSocket(url);
  await waitFor(ws, 'open', 5000, ['error', 'close']);
  const reply = waitFor(ws, 'message', 5000, ['error', 'close']);
  ws.send(text);
  const data = await reply;
  ws.close();
  return {
    echo: data.toString(),
    sdk: typeof Centrifuge === 'function' && typeof CentrifugeProtobuf === 'function',
  };
});
