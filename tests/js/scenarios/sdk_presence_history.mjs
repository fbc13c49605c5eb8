// Presence / presence stats with two users, then history (limit, reverse) on another channel.
// Usage: node sdk_presence_history.mjs <ws-url> <token u1> <token u2> <presence ch> <history ch>
import { argv, main } from '../lib.mjs';
import { client, connect, subscribe } from './_util.mjs';

const [url, token1, token2, presenceChannel, historyChannel] = argv;

const page = (h) => ({
  publications: h.publications.map((p) => ({ offset: p.offset, data: p.data })),
  offset: h.offset,
  epoch: h.epoch,
});

main(async () => {
  const c1 = client(url, { token: token1 });
  const c2 = client(url, { token: token2 });
  const id1 = (await connect(c1)).client;
  const id2 = (await connect(c2)).client;
  const s1 = c1.newSubscription(presenceChannel);
  await subscribe(s1);
  await subscribe(c2.newSubscription(presenceChannel));
  const presence = await s1.presence();
  const stats = await s1.presenceStats();

  const h = c1.newSubscription(historyChannel);
  const subscribed = await subscribe(h);
  const forward = await h.history({ limit: 2 });
  const reverse = await h.history({ limit: 2, reverse: true });
  c1.disconnect();
  c2.disconnect();
  return {
    ids: [id1, id2],
    presence: Object.fromEntries(
      Object.entries(presence.clients).map(([k, v]) => [k, { user: v.user, client: v.client }]),
    ),
    stats,
    streamPosition: subscribed.streamPosition,
    forward: page(forward),
    reverse: page(reverse),
  };
});
