// User-limited channel: a listed user subscribes, an unlisted one is refused.
// Usage: node sdk_user_limited.mjs <ws-url> <token listed> <token unlisted> <channel>
import { argv, main } from '../lib.mjs';
import { client, codeReason, connect, refused, subscribe } from './_util.mjs';

const [url, tokenAllowed, tokenDenied, channel] = argv;

main(async () => {
  const a = client(url, { token: tokenAllowed });
  const d = client(url, { token: tokenDenied });
  await connect(a);
  await connect(d);
  const sa = a.newSubscription(channel);
  await subscribe(sa);
  const denied = await refused(d.newSubscription(channel));
  const result = { allowed: sa.state, denied: codeReason(denied) };
  a.disconnect();
  d.disconnect();
  return result;
});
