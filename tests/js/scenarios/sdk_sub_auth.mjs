// Subscription permissions: token-only namespace without/with getToken, `$` private channel.
// Usage: node sdk_sub_auth.mjs <ws-url> <token u1> <secret channel> <sub token> <private ch>
import { argv, main } from '../lib.mjs';
import { client, codeReason, connect, refused, subscribe } from './_util.mjs';

const [url, token, secretChannel, subToken, privateChannel] = argv;

main(async () => {
  const c = client(url, { token });
  await connect(c);
  const plain = c.newSubscription(secretChannel);
  const refusedPlain = await refused(plain);
  c.removeSubscription(plain);

  const calls = [];
  const withToken = c.newSubscription(secretChannel, {
    getToken: async (ctx) => {
      calls.push(ctx.channel);
      return subToken;
    },
  });
  await subscribe(withToken);
  const state = withToken.state;
  const refusedPrivate = await refused(c.newSubscription(privateChannel));
  c.disconnect();
  return {
    plain: codeReason(refusedPlain),
    withToken: { state, getTokenCalls: calls },
    private: codeReason(refusedPrivate),
  };
});
