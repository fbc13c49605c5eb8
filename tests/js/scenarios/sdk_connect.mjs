// Connection auth with centrifuge-js: valid / forged / expired tokens and token refresh.
// Usage: node sdk_connect.mjs <mode> <ws-url> <token> [<getToken token>]
//   valid          connect; report the `connected` context.
//   bad            connect with a forged token (no getToken); report the disconnect and how
//                  many `connecting` events follow it within 1.5 s.
//   expired        connect with an expired token; getToken returns the fresh one.
//   refresh        short-lived token; getToken returns a fresh one; stay connected until
//                  1.5 s past the original `exp` + 1 s close delay, then make an RPC.
//   refresh_other  short-lived token; getToken returns another user's token.
import { argv, collect, main, sleep, waitFor } from '../lib.mjs';
import { client, connect, counter } from './_util.mjs';

const [mode, url, token, fresh] = argv;

function expMs(jwt) {
  const payload = JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
  return payload.exp * 1000;
}

main(async () => {
  let getTokenCalls = 0;
  const opts = { token };
  if (fresh !== undefined) {
    opts.getToken = async () => {
      getTokenCalls += 1;
      return fresh;
    };
  }
  const c = client(url, opts);
  const errors = collect(c, 'error');
  const connecting = counter(c, 'connecting');
  const disconnects = collect(c, 'disconnected');
  const errorsOut = () => errors.map((e) => ({ type: e.type, code: e.error?.code }));

  if (mode === 'bad') {
    const disconnected = waitFor(c, 'disconnected', 5000, ['connected']);
    c.connect();
    const ctx = await disconnected;
    const before = connecting.n;
    await sleep(1500);
    return {
      state: c.state,
      code: ctx.code,
      reason: ctx.reason,
      connectingAfter: connecting.n - before,
    };
  }

  const connected = await connect(c, 8000);
  const result = {
    client: connected.client,
    transport: connected.transport,
    getTokenCalls,
    errors: errorsOut(),
  };
  if (mode === 'refresh') {
    await sleep(Math.max(0, expMs(token) + 2500 - Date.now()));
    const rpc = await c.rpc('sum', { a: 1, b: 2 });
    Object.assign(result, {
      state: c.state,
      getTokenCalls,
      connectingAfterConnect: connecting.n - 1,
      disconnects: disconnects.length,
      rpc: rpc.data,
    });
  } else if (mode === 'refresh_other') {
    const ctx = await waitFor(c, 'disconnected', 6000);
    Object.assign(result, { state: c.state, getTokenCalls, code: ctx.code, reason: ctx.reason });
  }
  c.disconnect();
  return result;
});
