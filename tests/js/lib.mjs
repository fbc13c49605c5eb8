// Helpers for Node interop scenarios (tests/js/scenarios/*.mjs), driven by tests/conftest.py.
//
// Imports in Node 20 (centrifuge 5.7.4 ships an ESM build via package.json "exports"):
//   import { Centrifuge } from 'centrifuge';                  // JSON protocol -> build/index.mjs
//   import { Centrifuge } from 'centrifuge/build/protobuf';   // protobuf protocol -> build/protobuf/index.mjs
// Both builds export the same names (Centrifuge, Subscription, State, SubscriptionState,
// UnauthorizedError, errorCodes, disconnectedCodes, ...); the protobuf one is imported here
// as CentrifugeProtobuf. Node 20 has no global WebSocket/EventSource, so we pass `ws` and
// `eventsource` explicitly; fetch/ReadableStream are global (http_stream works as is).
//
// Contract with run_js (conftest.py): exactly one `RESULT <json>` line on stdout and exit 0 on
// success; `ERROR <message>` on stderr and exit 1 on failure; exit 2 on the hard timeout
// (env JS_TIMEOUT_MS, default 20000 ms).

import { Centrifuge } from 'centrifuge';
import { Centrifuge as CentrifugeProtobuf } from 'centrifuge/build/protobuf';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';

export { Centrifuge, CentrifugeProtobuf, EventSource, WebSocket };

/** Positional arguments passed by run_js(script, *args). */
export const argv = process.argv.slice(2);

const HARD_TIMEOUT_MS = Number.parseInt(process.env.JS_TIMEOUT_MS ?? '20000', 10);
setTimeout(() => {
  process.stderr.write(`ERROR hard timeout: scenario still running after ${HARD_TIMEOUT_MS} ms (JS_TIMEOUT_MS)\n`);
  process.exit(2);
}, HARD_TIMEOUT_MS).unref();

/**
 * Create a centrifuge-js client wired for Node.
 *
 * `endpoint` is a ws:// URL string or, for emulation/SSE, an array of
 * `{transport, endpoint}` (absolute http:// endpoints). Extra options (not passed to the SDK):
 *   - `protobuf: true`  use the protobuf build instead of JSON.
 * Defaults: `websocket` = ws, `eventsource` = the `eventsource` package, and for an array
 * endpoint `emulationEndpoint` = `<origin of first http(s) endpoint>/emulation` (Node needs an
 * absolute URL there: a relative one crashes the process with an unhandled ERR_INVALID_URL).
 */
export function makeClient(endpoint, opts = {}) {
  const { protobuf = false, ...sdkOpts } = opts;
  const options = { websocket: WebSocket, eventsource: EventSource, ...sdkOpts };
  if (Array.isArray(endpoint) && options.emulationEndpoint === undefined) {
    const http = endpoint.find((e) => /^https?:\/\//.test(e.endpoint));
    if (http) options.emulationEndpoint = new URL('/emulation', http.endpoint).toString();
  }
  const Cls = protobuf ? CentrifugeProtobuf : Centrifuge;
  return new Cls(endpoint, options);
}

/**
 * Resolve with the first argument of the next `event` emitted by `emitter` (a Centrifuge,
 * Subscription, ws WebSocket, ...). Rejects after `timeoutMs`, or as soon as one of the
 * `rejectOn` events fires (e.g. waitFor(client, 'connected', 5000, ['disconnected'])).
 * Create the promise BEFORE triggering the action: some events fire synchronously
 * (e.g. 'connecting' inside client.connect()).
 */
export function waitFor(emitter, event, timeoutMs = 5000, rejectOn = []) {
  return new Promise((resolve, reject) => {
    const handlers = new Map();
    const cleanup = () => {
      clearTimeout(timer);
      for (const [name, fn] of handlers) emitter.removeListener(name, fn);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timeout: no '${event}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    handlers.set(event, (ctx) => {
      cleanup();
      resolve(ctx);
    });
    for (const name of rejectOn) {
      handlers.set(name, (ctx) => {
        cleanup();
        reject(new Error(`got '${name}' while waiting for '${event}': ${safeJson(ctx)}`));
      });
    }
    for (const [name, fn] of handlers) emitter.on(name, fn);
  });
}

/** Collect the first argument of every `event` into the returned (live) array. */
export function collect(emitter, event) {
  const items = [];
  emitter.on(event, (ctx) => items.push(ctx));
  return items;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let reported = false;

/** Print the single `RESULT <json>` line (calling it twice is an error). */
export function report(obj) {
  if (reported) throw new Error('report() called twice: a scenario produces exactly one RESULT');
  reported = true;
  return new Promise((resolve) => {
    process.stdout.write(`RESULT ${JSON.stringify(obj ?? {})}\n`, () => resolve());
  });
}

function fail(err) {
  const message = err instanceof Error ? `${err.message}\n${err.stack}` : safeJson(err);
  process.stderr.write(`ERROR ${message}\n`, () => process.exit(1));
}

process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);

/** Run `fn`, report its resolved value, exit 0; on any exception print ERROR and exit 1. */
export function main(fn) {
  Promise.resolve()
    .then(fn)
    .then(report)
    .then(() => process.exit(0), fail);
}

function safeJson(value) {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}
