// Payload helpers for the protobuf build, where publication/RPC data are bytes.

/** JSON value → UTF-8 bytes (what the Python handlers decode). */
export const enc = (value) => new TextEncoder().encode(JSON.stringify(value));

/** UTF-8 JSON bytes → value (undefined for no payload). */
export const dec = (bytes) =>
  bytes && bytes.length ? JSON.parse(new TextDecoder().decode(bytes)) : undefined;

/** Bytes → lowercase hex. */
export const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** Hex → bytes. */
export const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

/** A uint64/int64 field as a number: protobufjs decodes them as `Long` when `long` is installed. */
export const num = (value) =>
  value !== null && typeof value === 'object' && typeof value.toNumber === 'function'
    ? value.toNumber()
    : value;
