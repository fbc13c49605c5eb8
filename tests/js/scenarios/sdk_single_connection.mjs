// client.subscribe_to_user_personal_channel.single_connection: a second connection of the
// same user disconnects the first one (3504 "connection limit", terminal for the SDK).
// Usage: node sdk_single_connection.mjs <ws-url-first> <ws-url-second> <token> <other-token>
// The two URLs may point at two nodes sharing one Redis. A connection of another user on
// the first URL is not touched.
import { argv, main, sleep, waitFor } from '../lib.mjs';
import { client, codeReason, connect } from './_util.mjs';

const [urlFirst, urlSecond, token, otherToken] = argv;

main(async () => {
  const first = client(urlFirst, { token });
  const other = client(urlFirst, { token: otherToken });
  await connect(first);
  await connect(other);
  const gone = waitFor(first, 'disconnected', 5000);
  const second = client(urlSecond, { token });
  await connect(second);
  const ctx = await gone;
  await sleep(300); // nothing else arrives meanwhile
  const result = {
    first: { ...codeReason(ctx), state: first.state },
    second: second.state,
    other: other.state,
  };
  second.disconnect();
  other.disconnect();
  return result;
});
