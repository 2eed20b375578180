/**
 * Canonical JSON and SHA-256 for the store: the same value always gives the same bytes (keys sorted at every
 * depth), so hashes and comparisons do not depend on the order a caller wrote an object's fields in.
 * WebCrypto only (`crypto.subtle`), present in Node 20+ and every browser: no `node:` module.
 */
import { InvalidArgumentError } from '../errors.js';

/** A value canonical JSON can hold: no undefined, functions, non-finite numbers or class instances. */
export type JsonValue = null | boolean | number | string | readonly JsonValue[] | { readonly [key: string]: JsonValue };

function canonicalPart(value: unknown, path: string): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new InvalidArgumentError(path, `must be a finite number; got ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((item, i) => canonicalPart(item, `${path}[${i}]`)).join(',')}]`;
  if (typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    const record = value as Record<string, unknown>;
    const fields = Object.keys(record)
      .filter((key) => record[key] !== undefined)
      .sort()
      .map((key) => `${JSON.stringify(key)}:${canonicalPart(record[key], `${path}.${key}`)}`);
    return `{${fields.join(',')}}`;
  }
  throw new InvalidArgumentError(path, `must be JSON (null, boolean, finite number, string, array or plain object); got ${typeof value}`);
}

/**
 * JSON with object keys sorted at every depth and fields whose value is `undefined` left out (as JSON.stringify
 * does), so two objects with the same fields give the same string.
 *
 * @throws InvalidArgumentError for a non-finite number or a value JSON cannot hold (a Map, a typed array, a function).
 * @example
 * ```ts
 * canonicalJson({ b: 1, a: [true, { d: null, c: 'x' }] }); // '{"a":[true,{"c":"x","d":null}],"b":1}'
 * ```
 */
export function canonicalJson(value: unknown, path = 'value'): string {
  return canonicalPart(value, path);
}

/** SHA-256 of `bytes` by WebCrypto (a view of a SharedArrayBuffer is copied first: WebCrypto refuses those). */
export async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  const owned = bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes);
  return new Uint8Array(await crypto.subtle.digest('SHA-256', owned));
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const byte of bytes) out += HEX[byte];
  return out;
}
