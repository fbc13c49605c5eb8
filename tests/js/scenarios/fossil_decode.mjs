// centrifuge-js 5.7.4's own fossil decoder (the codecs' applyDeltaIfNeeded, as a delta
// subscription calls them), fed deltas made by centrifuge_asgi.fossil.
// Usage: node fossil_decode.mjs <cases.json>; the file holds [{source, delta, json}] with
// source and delta in base64 (json: the delta travels as a JSON string, else as bytes).
// Reports the decoded targets in base64, or the error of each case.
import { readFileSync } from 'node:fs';
import { Centrifuge, CentrifugeProtobuf, argv, main } from '../lib.mjs';

const [path] = argv;

main(async () => {
  const jsonCodec = new Centrifuge('ws://127.0.0.1:9/none')._codec;
  const protobufCodec = new CentrifugeProtobuf('ws://127.0.0.1:9/none')._codec;
  const cases = JSON.parse(readFileSync(path, 'utf8'));
  const out = [];
  for (const { source, delta, json } of cases) {
    const prev = new Uint8Array(Buffer.from(source, 'base64'));
    const patch = Buffer.from(delta, 'base64');
    try {
      if (json) {
        // the SDK gets the delta as a string and applies its UTF-8 bytes; the result is
        // JSON text it parses: compare the bytes it reconstructed (newPrevValue)
        const pub = { delta: true, data: patch.toString('utf8') };
        const { newPrevValue } = jsonCodec.applyDeltaIfNeeded(pub, prev);
        out.push(Buffer.from(newPrevValue).toString('base64'));
      } else {
        const pub = { delta: true, data: new Uint8Array(patch) };
        const { newData } = protobufCodec.applyDeltaIfNeeded(pub, prev);
        out.push(Buffer.from(newData).toString('base64'));
      }
    } catch (err) {
      out.push({ error: String(err) });
    }
  }
  return { decoded: out };
});
