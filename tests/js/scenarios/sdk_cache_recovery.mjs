// Cache recovery (force_recovery_mode: cache): a subscriber gets only the latest publication
// on subscribe and after a reconnect, instead of a replay of what it missed.
// Usage: node sdk_cache_recovery.mjs <ws-url> <token> <cache-channel> <auto-channel>
// The cache channel is subscribed with `since: {}` (recover from nothing); the channel of
// an auto_cache_recover namespace without it. RPCs: publish {channel, items}, and
// drop_and_publish {channels, items}: disconnects this user with 3011, then publishes items
// into each channel (while the client reconnects).
import { argv, main, waitFor } from '../lib.mjs';
import { client, connect, until } from './_util.mjs';

const [url, token, cacheChannel, autoChannel] = argv;

main(async () => {
  const c = client(url, { token });
  const events = { [cacheChannel]: [], [autoChannel]: [] };
  const subs = [
    c.newSubscription(cacheChannel, { since: {} }),
    c.newSubscription(autoChannel),
  ];
  for (const s of subs) {
    const log = events[s.channel];
    s.on('publication', (p) => log.push({ pub: p.offset, n: p.data.n }));
    s.on('subscribed', (ctx) =>
      log.push({ subscribed: { wasRecovering: ctx.wasRecovering, recovered: ctx.recovered } }),
    );
  }
  const seen = (ch, n) => () => events[ch].some((e) => e.n === n);
  await connect(c);
  for (const channel of [cacheChannel, autoChannel]) {
    await c.rpc('publish', { channel, items: [{ n: 1 }, { n: 2 }, { n: 3 }] });
  }
  for (const s of subs) {
    const subscribed = waitFor(s, 'subscribed', 5000, ['unsubscribed']);
    s.subscribe();
    await subscribed;
    await until(seen(s.channel, 3), 5000, `latest publication of ${s.channel}`);
  }

  // away while 4, 5, 6 are published: only 6 comes back
  const reconnecting = waitFor(c, 'connecting');
  const resubscribed = subs.map((s) => waitFor(s, 'subscribed', 8000));
  const missed = [{ n: 4 }, { n: 5 }, { n: 6 }];
  const channels = [cacheChannel, autoChannel];
  c.rpc('drop_and_publish', { channels, items: missed }).catch(() => {}); // no reply comes
  await reconnecting;
  await Promise.all(resubscribed);
  for (const channel of [cacheChannel, autoChannel]) {
    await c.rpc('publish', { channel, items: [{ n: 7 }] });
    await until(seen(channel, 7), 5000, `publication after recovery in ${channel}`);
  }
  c.disconnect();
  return events;
});
