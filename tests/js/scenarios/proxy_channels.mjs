// Subscribe and publish proxies: allow, modify (subscribe data and channel info; the
// published data is replaced), deny (the backend's error code reaches the client) and a
// backend disconnect.
// Usage: node proxy_channels.mjs <ws-url>
import { argv, collect, main, waitFor } from '../lib.mjs';
import { client, codeReason, connect, refused, rejection, subscribe, until } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'carol' } });
  await connect(c);

  const allow = c.newSubscription('px:allow');
  const allowPubs = collect(allow, 'publication');
  await subscribe(allow);
  await allow.publish({ text: 'as is' });
  await until(() => allowPubs.length === 1, 5000, 'allowed publication');

  const modify = c.newSubscription('px:modify');
  const modifyPubs = collect(modify, 'publication');
  const modifyCtx = await subscribe(modify);
  await modify.publish({ text: 'hello' });
  await until(() => modifyPubs.length === 1, 5000, 'modified publication');
  const presence = await modify.presence();
  const me = Object.values(presence.clients)[0];

  const subscribeDenied = codeReason(await refused(c.newSubscription('px:deny')));
  const publishDenied = await rejection(c.publish('px:deny', { text: 'nope' }));

  const disconnected = waitFor(c, 'disconnected', 5000);
  c.newSubscription('px:kick').subscribe();
  const kicked = codeReason(await disconnected);

  return {
    allowPubs: allowPubs.map((p) => p.data),
    modifySubscribeData: modifyCtx.data,
    modifyPubs: modifyPubs.map((p) => p.data),
    modifyPubChanInfo: modifyPubs[0].info?.chanInfo,
    presenceChanInfo: me?.chanInfo,
    subscribeDenied,
    publishDenied,
    kicked,
  };
});
