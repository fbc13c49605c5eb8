// Publication tags filters (`tagsFilter`): live delivery, recovery after a forced reconnect,
// and the 107 refusals (namespace without allow_tags_filter, invalid tree). JSON or Protobuf.
// Usage: node sdk_tags_filter.mjs <ws-url> <token> <token of a second user> <json|protobuf>
// RPCs: publish_tagged {channel, items: [{data, tags}]} publishes items with their tags;
// drop_and_publish_tagged {channel, items} disconnects this user with 3011 first.
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, refused, subscribe, until } from './_util.mjs';
import { dec, enc, num } from './protobuf_util.mjs';

const [url, token, otherToken, mode] = argv;
const protobuf = mode === 'protobuf';
const pack = (value) => (protobuf ? enc(value) : value);
const unpack = (data) => (protobuf ? dec(data) : data);
const channel = 'tags:quotes';

// ticker in (AAPL, MSFT) and price > 100
const tagsFilter = {
  op: 'and',
  nodes: [
    { key: 'ticker', cmp: 'in', vals: ['AAPL', 'MSFT'] },
    { key: 'price', cmp: 'gt', val: '100' },
  ],
};

const item = (n, tags) => (tags ? { data: { n }, tags } : { data: { n } });

main(async () => {
  const c = client(url, { token, protobuf });
  const all = client(url, { token: otherToken, protobuf });
  const s = c.newSubscription(channel, { tagsFilter });
  const u = all.newSubscription(channel);
  const events = [];
  const seenAll = [];
  s.on('publication', (p) => events.push({ n: unpack(p.data).n, offset: num(p.offset), tags: p.tags }));
  s.on('subscribed', (ctx) =>
    events.push({
      subscribed: { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered },
      offset: num(ctx.streamPosition?.offset),
    }),
  );
  u.on('publication', (p) => seenAll.push(unpack(p.data).n));
  const pubs = () => events.filter((e) => e.n !== undefined).map((e) => e.n);
  await connect(c);
  await connect(all);
  await subscribe(s);
  await subscribe(u);

  await c.rpc(
    'publish_tagged',
    pack({
      channel,
      items: [
        item(1, { ticker: 'AAPL', price: '150.25' }),
        item(2, { ticker: 'AAPL', price: '99.5' }),
        item(3, { ticker: 'GOOG', price: '500' }),
        item(4),
        item(5, { ticker: 'MSFT', price: '100.01' }),
      ],
    }),
  );
  await until(() => seenAll.length === 5, 5000, 'every publication for the unfiltered subscriber');
  await until(() => pubs().includes(5), 5000, 'the last matching publication');

  // missed while away: recovery returns only the matching ones
  const reconnecting = waitFor(c, 'connecting');
  const resubscribed = waitFor(s, 'subscribed', 8000);
  const missed = [
    item(6, { ticker: 'MSFT', price: '1' }),
    item(7, { ticker: 'MSFT', price: '2e3' }), // not a decimal number: no match
    item(8, { ticker: 'AAPL', price: '1000' }),
    item(9),
  ];
  c.rpc('drop_and_publish_tagged', pack({ channel, items: missed })).catch(() => {});
  await reconnecting;
  await resubscribed;
  await c.rpc('publish_tagged', pack({ channel, items: [item(10, { ticker: 'AAPL', price: '101' })] }));
  await until(() => pubs().includes(10), 5000, 'publication after recovery');

  // 107 where the namespace does not allow filters, and for an invalid tree
  const refusedNs = await refused(c.newSubscription('chat:quotes', { tagsFilter }));
  const invalid = { key: 'ticker', cmp: 'eq' }; // eq without val
  const refusedTree = await refused(c.newSubscription('tags:other', { tagsFilter: invalid }));
  c.disconnect();
  all.disconnect();
  return {
    events,
    seenAll: seenAll.slice(0, 5),
    refusedNs: { code: refusedNs.code, reason: refusedNs.reason },
    refusedTree: { code: refusedTree.code, reason: refusedTree.reason },
  };
});
