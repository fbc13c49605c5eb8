// Commands of one connection overtaking each other (client.concurrency).
// Usage: node sdk_concurrency.mjs <base-url> <token> <transport> [protobuf]
//   transport: websocket | http_stream | sse
// Issues a slow RPC ("slow", the server lets it finish once "fast" has run or after a
// bounded wait) and then a fast one ("fast") without waiting, and reports the order in
// which the replies arrived.
import { argv, main } from '../lib.mjs';
import { client, connect } from './_util.mjs';

const [base, token, transport, protobufArg = ''] = argv;
const protobuf = protobufArg === 'protobuf';
const enc = (value) => (protobuf ? new TextEncoder().encode(JSON.stringify(value)) : value);
const dec = (data) => (protobuf ? JSON.parse(new TextDecoder().decode(data)) : data);

function endpoint() {
  if (transport === 'websocket') return `${base.replace(/^http/, 'ws')}/connection/websocket`;
  return [{ transport, endpoint: `${base}/connection/${transport}` }];
}

main(async () => {
  const c = client(endpoint(), { token, protobuf });
  await connect(c);
  const order = [];
  const slow = c.rpc('slow', enc({})).then((r) => order.push(['slow', dec(r.data)]));
  const fast = c.rpc('fast', enc({})).then((r) => order.push(['fast', dec(r.data)]));
  await Promise.all([slow, fast]);
  c.disconnect();
  return { order };
});
