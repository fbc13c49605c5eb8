// Subscription streams from a gRPC proxy: a unidirectional stream feeds three
// publications and ends (unsubscribed 2000); a bidirectional one echoes what the client
// publishes; a stream whose first answer is an error refuses the subscription.
// Usage: node proxy_grpc_stream.mjs <ws-url>
import { argv, collect, main, waitFor } from '../lib.mjs';
import { client, codeReason, connect, refused, subscribe, until } from './_util.mjs';

const [url] = argv;

main(async () => {
  const c = client(url, { data: { user: 'js' } });
  await connect(c);

  const ticks = c.newSubscription('stream:ticks');
  const tickPubs = collect(ticks, 'publication');
  const ended = waitFor(ticks, 'unsubscribed', 5000);
  const ticksCtx = await subscribe(ticks);
  const unsubscribed = codeReason(await ended);

  const chat = c.newSubscription('bidi:chat');
  const chatPubs = collect(chat, 'publication');
  await subscribe(chat);
  await chat.publish({ text: 'ping' });
  await chat.publish({ text: 'pong' });
  await until(() => chatPubs.length === 2, 5000, 'echoed publications');

  const denied = codeReason(await refused(c.newSubscription('stream:deny')));
  c.disconnect();
  return {
    ticksData: ticksCtx.data,
    ticks: tickPubs.map((p) => ({ data: p.data, tags: p.tags })),
    unsubscribed,
    chat: chatPubs.map((p) => p.data),
    denied,
  };
});
