// A user connected to two nodes is disconnected by one API call on node A.
// Usage: node multinode_disconnect.mjs <ws-url-a> <ws-url-b> <user-token> <admin-token>
// The admin client (on node A) calls RPC `disconnect` {user}; node A's handler calls
// node.disconnect(user), which must reach the user's connection on node B too.
import { argv, main, waitFor } from '../lib.mjs';
import { client, codeReason, connect } from './_util.mjs';

const [urlA, urlB, userToken, adminToken] = argv;

main(async () => {
  const onA = client(urlA, { token: userToken });
  const onB = client(urlB, { token: userToken });
  const admin = client(urlA, { token: adminToken });
  await connect(onA);
  await connect(onB);
  await connect(admin);
  const goneA = waitFor(onA, 'disconnected', 5000);
  const goneB = waitFor(onB, 'disconnected', 5000);
  await admin.rpc('disconnect', { user: 'bob' });
  const [ctxA, ctxB] = await Promise.all([goneA, goneB]);
  admin.disconnect();
  return { a: codeReason(ctxA), b: codeReason(ctxB), adminState: admin.state };
});
