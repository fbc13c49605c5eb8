// Small helpers shared by the sdk_*.mjs scenarios (on top of ../lib.mjs).
import { makeClient, sleep, waitFor } from '../lib.mjs';

/** A client with fast reconnects, so a reconnect attempt shows up within a short window. */
export function client(url, opts = {}) {
  return makeClient(url, { minReconnectDelay: 100, maxReconnectDelay: 1000, timeout: 5000, ...opts });
}

/** Connect and resolve with the `connected` context (rejects on `disconnected`). */
export async function connect(c, timeoutMs = 5000) {
  const connected = waitFor(c, 'connected', timeoutMs, ['disconnected']);
  c.connect();
  return connected;
}

/** Subscribe and resolve with the `subscribed` context (rejects on `unsubscribed`). */
export async function subscribe(sub, timeoutMs = 5000) {
  const subscribed = waitFor(sub, 'subscribed', timeoutMs, ['unsubscribed']);
  sub.subscribe();
  return subscribed;
}

/** Subscribe expecting a terminal refusal; resolve with the `unsubscribed` context. */
export async function refused(sub, timeoutMs = 5000) {
  const unsubscribed = waitFor(sub, 'unsubscribed', timeoutMs, ['subscribed']);
  sub.subscribe();
  return unsubscribed;
}

/** Count `event` emissions; `.n` is live. */
export function counter(emitter, event) {
  const box = { n: 0 };
  emitter.on(event, () => {
    box.n += 1;
  });
  return box;
}

/** Poll `pred` every 20 ms until it is truthy (rejects after `timeoutMs`). */
export async function until(pred, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
    await sleep(20);
  }
}

/** Await a promise that must reject; resolve with {code, message} of the error. */
export async function rejection(promise) {
  try {
    const value = await promise;
    return { resolved: value };
  } catch (err) {
    return { code: err?.code, message: err?.message };
  }
}

/** `{code, reason}` of an event context. */
export const codeReason = (ctx) => ({ code: ctx.code, reason: ctx.reason });
