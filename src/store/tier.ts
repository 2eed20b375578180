/**
 * The shape every store tier has: host memory now; GPU-resident, a directory, OPFS and Redis later. All
 * methods are async (a disk or a server answers later) and sizes are bytes. A tier stores opaque entry bytes
 * (the container of entry-format.ts); checking them is the reader's job, so a tier never needs to parse one.
 */

/** Why a `get` found nothing. */
export type MissReason = 'absent' | 'expired';

/** Why an entry left a tier: its TTL ran out, room was needed, or a caller deleted it. */
export type EvictionReason = 'ttl' | 'capacity' | 'explicit';

/** Options of {@link StoreTier.put}. */
export interface PutOptions {
  /** Milliseconds the entry lives from now; null: until evicted. Default: the tier's default TTL. */
  readonly ttlMs?: number | null;
  /** A pinned entry is never evicted (neither by TTL nor for room); only `delete` removes it. Default false. */
  readonly pinned?: boolean;
  /** Prefill tokens a hit on this entry saves (its prefix length); weighs priority-decay eviction. Default 1. */
  readonly prefillTokens?: number;
}

/** Counters of a tier since it was made. */
export interface TierStats {
  readonly entries: number;
  readonly bytes: number;
  readonly pinnedEntries: number;
  readonly pinnedBytes: number;
  readonly hits: number;
  readonly misses: Readonly<Record<MissReason, number>>;
  readonly evictions: Readonly<Record<EvictionReason, number>>;
  /** Capacity evictions handed to the next tier (a subset of `evictions.capacity`). */
  readonly demotions: number;
  /** Entries `put` could not keep: larger than the room the pinned entries leave (handed on when a next tier exists). */
  readonly rejected: number;
}

/** One live entry as {@link StoreTier.list} describes it. */
export interface TierEntryInfo {
  readonly key: string;
  readonly bytes: number;
  readonly pinned: boolean;
  /** Clock time (ms) the entry expires at; null: never. */
  readonly expiresAtMs: number | null;
  /** The prefill tokens given at `put` (the store passes the tokens the entry covers). */
  readonly prefillTokens: number;
  readonly hits: number;
}

/**
 * A tier of the store.
 *
 * @example
 * ```ts
 * const disk: StoreTier = …; // a later tier
 * const memory = new MemoryTier({ maxBytes: 256 << 20, eviction: 'priority-decay', next: disk });
 * await memory.put(key, bytes, { prefillTokens: 512 });
 * const hit = await memory.get(key); // Uint8Array, or null
 * ```
 */
export interface StoreTier {
  /** For stats and messages. */
  readonly name: string;
  /** The entry's bytes (a hit), or null (a miss, counted by reason). Do not mutate what it returns. */
  get(key: string): Promise<Uint8Array | null>;
  /**
   * Stores `bytes` under `key`, replacing any entry there, evicting others as needed. Resolves true when this
   * tier holds the entry, false when it does not fit beside the pinned entries (then it went to the next tier, if
   * any).
   * The tier keeps `bytes` as given: do not mutate them afterwards.
   */
  put(key: string, bytes: Uint8Array, options?: PutOptions): Promise<boolean>;
  /** Removes the entry (an `explicit` eviction, never demoted); resolves whether there was one. */
  delete(key: string): Promise<boolean>;
  /** Whether a live entry is there; counts no hit or miss and does not touch recency. */
  has(key: string): Promise<boolean>;
  /** Keys of the live entries. */
  keys(): Promise<string[]>;
  stats(): Promise<TierStats>;
  /**
   * Optional: `has` of many keys at once (one index look-up instead of one call each), in the order given.
   * The store uses it when a tier has it.
   */
  hasMany?(keys: readonly string[]): Promise<boolean[]>;
  /** Optional: what `keys` gives, with each entry's size, pinning, expiry, prefill tokens and hits. */
  list?(): Promise<TierEntryInfo[]>;
  /** Optional: deletes every entry, pinned ones too (`explicit` evictions); resolves how many. */
  clear?(): Promise<number>;
  /** Releases what the tier holds open (a connection), after finishing queued writes; optional. */
  close?(): Promise<void>;
}
