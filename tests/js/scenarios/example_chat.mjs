// The chat example as a browser would use it: token from /token, lobby, RPC, announce.
import { argv, main, makeClient, waitFor } from '../lib.mjs';

main(async () => {
  const [httpUrl] = argv;
  const getToken = async () => (await fetch(`${httpUrl}/token?user=alice`)).text();
  const client = makeClient(httpUrl.replace(/^http/, 'ws') + '/connection/websocket', { getToken });
  const sub = client.newSubscription('chat:lobby');
  const subscribed = waitFor(sub, 'subscribed');
  const connected = waitFor(client, 'connected');
  sub.subscribe();
  client.connect();
  const conn = await connected;
  await subscribed;
  const rpc = await client.rpc('time', {});
  const publication = waitFor(sub, 'publication');
  const resp = await fetch(`${httpUrl}/announce`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text: 'hello from backend' }),
  });
  const pub = await publication;
  const presence = await sub.presence();
  return {
    client: conn.client,
    rpcUser: rpc.data.user,
    announceStatus: resp.status,
    pubData: pub.data,
    pubOffset: pub.offset,
    presenceUsers: Object.values(presence.clients).map((c) => c.user),
  };
});
