/**
 * The parts of the Redis tier that need no server: the circuit breaker, the cluster slot of a key, the key layout
 * and the redaction of credentials. Kept apart so they are tested without a socket and redis-tier.ts stays short.
 */
import { InvalidArgumentError } from '../errors.js';

/** Where a circuit breaker stands: closed lets everything through, open nothing, half-open one probe. */
export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Skips a failing server for a while: after `threshold` consecutive failures it opens for `openMs` (on the
 * injected clock), then lets one probe through; the probe's success closes it, its failure opens it again.
 * Why: a dead or paused server costs every lookup a full timeout; skipping it costs nothing, and generation
 * only needed a miss.
 */
export class CircuitBreaker {
  #failures = 0;
  #openedAtMs: number | null = null;
  #probing = false;
  /** Times it opened. */
  opens = 0;

  constructor(
    readonly threshold: number,
    readonly openMs: number,
    readonly now: () => number,
  ) {}

  get state(): BreakerState {
    if (this.#openedAtMs === null) return 'closed';
    return this.#probing || this.now() - this.#openedAtMs >= this.openMs ? 'half-open' : 'open';
  }

  /** Whether an operation may go to the server now; in half-open, true once (the probe) until it reports back. */
  allow(): boolean {
    if (this.#openedAtMs === null) return true;
    if (this.#probing || this.now() - this.#openedAtMs < this.openMs) return false;
    this.#probing = true;
    return true;
  }

  /** Whether an operation would be let through, without taking the probe (a write checks before it queues). */
  wouldAllow(): boolean {
    return this.#openedAtMs === null || (!this.#probing && this.now() - this.#openedAtMs >= this.openMs);
  }

  success(): void {
    this.#failures = 0;
    this.#openedAtMs = null;
    this.#probing = false;
  }

  failure(): void {
    this.#failures++;
    if (this.#probing || (this.#openedAtMs === null && this.#failures >= this.threshold)) {
      this.opens++;
      this.#openedAtMs = this.now();
      this.#probing = false;
    }
  }
}

const CRC16_TABLE = (() => {
  // CRC-16/XMODEM (polynomial 0x1021), the checksum Redis Cluster maps keys to slots with.
  const table = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let crc = i << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    table[i] = crc;
  }
  return table;
})();

/** The cluster slot (0…16383) of a Redis key, honouring a `{hash tag}` as Redis does. */
export function clusterSlot(redisKey: string): number {
  let hashed = redisKey;
  const open = redisKey.indexOf('{');
  if (open >= 0) {
    const close = redisKey.indexOf('}', open + 1);
    if (close > open + 1) hashed = redisKey.slice(open + 1, close);
  }
  let crc = 0;
  for (const byte of new TextEncoder().encode(hashed)) crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc % 16384;
}

/** Separates a tier key's group (what shares a cluster slot) from the rest; see {@link groupedKey}. */
export const GROUP_SEPARATOR = '/';
/** Characters of the group that form the hash tag: 16 hex digits = 64 bits, far more than 16384 slots need. */
export const HASH_TAG_CHARS = 16;

/**
 * A tier key whose entries share one Redis Cluster slot with every other key of the same `group`: pass the
 * chain's namespace (hex H_0) as the group and the link's key, so that one lookup's keys (one stream chain) are
 * answered by one node in one round trip.
 *
 * @example
 * ```ts
 * const chain = await streamChain(namespace, stream, 16);
 * const keys = chain.links.map((link) => groupedKey(chain.namespace, link.key));
 * const present = await redis.hasMany(keys);
 * ```
 */
export function groupedKey(group: string, key: string): string {
  if (group === '' || group.includes(GROUP_SEPARATOR) || /[{}]/.test(group)) {
    throw new InvalidArgumentError('group', `must be non-empty, without "${GROUP_SEPARATOR}", "{" or "}"; got ${JSON.stringify(group)}`);
  }
  return `${group}${GROUP_SEPARATOR}${key}`;
}

/**
 * The Redis key of a tier key: `<prefix>:{<tag>}:<tier key>`, where the tag is the first {@link HASH_TAG_CHARS}
 * characters of the key's group (before the first "/"), or of the key itself when it has no group (then each key
 * lands in its own slot). Braces in the tag are replaced so a key cannot choose another tag.
 */
export function redisKeyOf(prefix: string, key: string): string {
  const separator = key.indexOf(GROUP_SEPARATOR);
  const group = separator > 0 ? key.slice(0, separator) : key;
  const tag = group.slice(0, HASH_TAG_CHARS).replace(/[{}]/g, '_');
  return `${prefix}:{${tag}}:${key}`;
}

/** The tier key of a Redis key written by {@link redisKeyOf}, or null for a key of another layout. */
export function tierKeyOf(prefix: string, redisKey: string): string | null {
  if (!redisKey.startsWith(`${prefix}:{`)) return null;
  const close = redisKey.indexOf('}:', prefix.length + 2);
  return close < 0 ? null : redisKey.slice(close + 2);
}

/** A Redis URL with its user and password replaced by "***" (what stats and messages show). */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.username !== '' || parsed.password !== '') {
      parsed.username = parsed.username === '' ? '' : '***';
      parsed.password = parsed.password === '' ? '' : '***';
    }
    return parsed.toString();
  } catch {
    return '<unparsable redis URL>';
  }
}

/** The secrets of a URL (decoded user password), to scrub from any text that might echo them. */
export function urlSecrets(url: string): string[] {
  try {
    const parsed = new URL(url);
    const secrets = [parsed.password, decodeURIComponent(parsed.password)].filter((s) => s.length >= 1);
    return [...new Set(secrets)];
  } catch {
    return [];
  }
}

/** `text` with every URL credential and every secret replaced by "***". */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text.replace(/(rediss?:\/\/)[^@\s/]*@/gi, '$1***@');
  for (const secret of secrets) out = out.split(secret).join('***');
  return out;
}

/** How an operation settled: its value, or why not (no answer in time, an error). */
export type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: 'timeout' | 'error'; readonly error?: unknown };

export function positive(field: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) throw new InvalidArgumentError(field, `must be a positive number; got ${value}`);
  return value;
}

export function checkUrl(url: string): string {
  if (!/^rediss?:\/\//i.test(url)) throw new InvalidArgumentError('url', `must start with redis:// or rediss://; got ${redactUrl(url)}`);
  try {
    new URL(url);
  } catch {
    throw new InvalidArgumentError('url', `is not a URL: ${redactUrl(url)}`);
  }
  return url;
}

/** Resolves how `promise` settled, or a timeout after `ms`; never rejects. */
export function settle<T>(promise: Promise<T>, ms: number): Promise<Outcome<T>> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, reason: 'timeout' }), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ ok: true, value });
      },
      (error: unknown) => {
        clearTimeout(timer);
        resolve({ ok: false, reason: 'error', error });
      },
    );
  });
}

export function asBytes(reply: unknown): Uint8Array | null {
  if (reply === null || reply === undefined) return null;
  // A plain view (no copy): callers compare and hand on Uint8Arrays; a Buffer subclass would surprise them.
  if (reply instanceof Uint8Array) return new Uint8Array(reply.buffer, reply.byteOffset, reply.byteLength);
  if (typeof reply === 'string') return new TextEncoder().encode(reply);
  return null;
}

export function infoField(info: string, field: string): string | null {
  const match = new RegExp(`^${field}:(.*)$`, 'm').exec(info);
  return match ? (match[1] as string).trim() : null;
}

