/**
 * The context store: saved cache states of token streams over an ordered list of tiers (front first: host
 * memory, then a directory or OPFS, later a server). A lookup finds the longest saved state of a stream, checks
 * it strictly (entry-format.ts) and promotes a hit from a lower tier to the tiers in front; a save writes to the
 * front tier, whose evictions carry entries down. A bad entry is a miss with its reason, deleted where it lay,
 * and the lookup goes on to the next shorter state: never a crash, never wrong data.
 *
 * Keys come from the stream's operations and the namespace (context-stream.ts): the tenant salt is in the
 * namespace, so two tenants never share a key, whatever tiers they share.
 */
import { InvalidArgumentError, StoreEntryError, type StoreEntryReason } from '../errors.js';
import { streamChain, streamTokens, type ContextStream, type StreamChain, type StreamLink } from './context-stream.js';
import { decodeStoreEntry, encodeStoreEntry, type StoreEntry, type StoreEntryExpectation } from './entry-format.js';
import type { StoreNamespace } from './keys.js';
import type { EvictionReason, StoreTier, TierStats } from './tier.js';

/** Options of {@link ContextStore}. */
export interface ContextStoreOptions {
  /** Front first; at least one. A save goes to `tiers[0]`. */
  readonly tiers: readonly StoreTier[];
  readonly namespace: StoreNamespace;
  /** Tokens per key block (the cache's block size). */
  readonly blockSize: number;
  /** Milliseconds for restore timings. Default performance.now. */
  readonly clock?: () => number;
}

/**
 * Why a lookup did not use an entry: `absent` (no tier held any state of the stream: counted once per missing
 * lookup), `vanished` (a tier said it held the entry, then had none: it expired or was evicted in between),
 * `unavailable` (a tier threw: a disk or server error; the lookup goes on without that tier), or the
 * {@link StoreEntryReason} of an entry the reader refused (corrupt, another model, other settings…).
 */
export type StoreMissReason = 'absent' | 'vanished' | 'unavailable' | StoreEntryReason;

/** What the reader checks; the token count is the link's, always. */
export type StoreExpectation = Omit<StoreEntryExpectation, 'tokenCount'>;

/** A lookup that found a saved state. */
export interface StoreHit {
  readonly hit: true;
  readonly link: StreamLink;
  readonly key: string;
  readonly entry: StoreEntry;
  /** Size of the entry as stored. */
  readonly bytes: number;
  /** Name of the tier it came from. */
  readonly tier: string;
  /** A shorter state than the whole stream: the caller prefills the rest. */
  readonly partial: boolean;
  /** Milliseconds to read and check the entry (get + decode). */
  readonly restoreMs: number;
  readonly queryTokens: number;
}

/** A lookup that found nothing usable. */
export interface StoreMiss {
  readonly hit: false;
  readonly queryTokens: number;
  /** The entries it refused on the way, with why (empty: nothing was saved). */
  readonly refused: readonly { readonly key: string; readonly tier: string; readonly reason: StoreMissReason }[];
}

export type StoreLookup = StoreHit | StoreMiss;

/** Options of {@link ContextStore.save}. */
export interface SaveOptions {
  /** As PutOptions.ttlMs: the front tier's default when left out. */
  readonly ttlMs?: number | null;
  readonly pinned?: boolean;
  /** Default: the tokens the link covers (or the entry's token count when saving by key). */
  readonly prefillTokens?: number;
}

/** What {@link ContextStore.save} stored. */
export interface SavedEntry {
  readonly key: string;
  readonly bytes: number;
  /** Whether the front tier holds it (false: it did not fit there and went to the next tier, if any). */
  readonly stored: boolean;
}

/** The answer of {@link ContextStore.lookupOrCompute}. */
export type LookupOrComputeResult =
  | { readonly computed: false; readonly found: StoreHit }
  | { readonly computed: true; readonly found: StoreLookup; readonly saved: SavedEntry };

/** One entry of {@link ContextStore.list}. */
export interface StoreListing {
  readonly key: string;
  readonly tier: string;
  /** Null where the tier has no `list`. */
  readonly bytes: number | null;
  /** Tokens it saves a prefill of (as saved), null where the tier has no `list`. */
  readonly tokens: number | null;
  readonly pinned: boolean | null;
  readonly expiresAtMs: number | null;
}

/** {@link ContextStore.stats}. */
export interface ContextStoreStats {
  readonly lookups: number;
  /** Lookups that found a state (partial ones included). */
  readonly hits: number;
  /** Hits on a shorter state than the whole stream. */
  readonly partialHits: number;
  /** Lookups that found nothing. */
  readonly misses: number;
  /** Entries not used, by reason (see {@link StoreMissReason}). */
  readonly missReasons: Readonly<Record<StoreMissReason, number>>;
  /** Tokens the hits covered: the prefill tokens the store saved. */
  readonly hitTokens: number;
  /** Tokens of every stream looked up. */
  readonly queryTokens: number;
  /** hitTokens / queryTokens (vLLM's prefix-cache hit rate); 0 before any lookup. */
  readonly hitRate: number;
  /** Copies of hits from a lower tier into a tier in front (one per tier copied to). */
  readonly promotions: number;
  /** Copies that failed (the tier's put threw); the hit itself was still served. */
  readonly promotionFailures: number;
  readonly saves: number;
  readonly restoreMs: { readonly total: number; readonly last: number };
  /** Each tier's own counters (bytes, entries, evictions by reason, …), front first. */
  readonly tiers: readonly (TierStats & { readonly name: string })[];
  /** Evictions by reason summed over the tiers. */
  readonly evictions: Readonly<Record<EvictionReason, number>>;
}

const ENTRY_REASONS: readonly StoreEntryReason[] = ['length', 'magic', 'version', 'checksum', 'header', 'section', 'layout', 'fingerprint', 'shape', 'settings', 'tokens'];

/**
 * Saved states of token streams over tiers.
 *
 * @example
 * ```ts
 * const store = new ContextStore({ tiers: [new MemoryTier({ maxBytes: 256 << 20 })], namespace, blockSize: 16 });
 * const found = await store.lookup(stream, { fingerprint, shape, layoutVersion: 1 });
 * const from = found.hit ? found.link.tokens : 0; // restore found.entry, then prefill the stream from there
 * const last = (await store.chain(stream)).links.at(-1);
 * if (last) await store.save(last, entryOfTheWholeStream, { ttlMs: 3_600_000 });
 * ```
 */
export class ContextStore {
  readonly tiers: readonly StoreTier[];
  readonly namespace: StoreNamespace;
  readonly blockSize: number;
  readonly #clock: () => number;
  readonly #inflight = new Map<string, Promise<unknown>>();
  #lookups = 0;
  #hits = 0;
  #partialHits = 0;
  #misses = 0;
  readonly #missReasons: Record<StoreMissReason, number>;
  #hitTokens = 0;
  #queryTokens = 0;
  #promotions = 0;
  #promotionFailures = 0;
  #saves = 0;
  #restoreTotal = 0;
  #restoreLast = 0;

  /** @throws InvalidArgumentError for no tiers, two tiers of one name, or a bad block size. */
  constructor(options: ContextStoreOptions) {
    if (options.tiers.length === 0) throw new InvalidArgumentError('tiers', 'must hold at least one tier');
    const names = options.tiers.map((tier) => tier.name);
    if (new Set(names).size !== names.length) throw new InvalidArgumentError('tiers', `names must differ (stats and listings name tiers); got ${names.join(', ')}`);
    if (!Number.isInteger(options.blockSize) || options.blockSize < 1) throw new InvalidArgumentError('blockSize', `must be an integer ≥ 1; got ${options.blockSize}`);
    this.tiers = [...options.tiers];
    this.namespace = options.namespace;
    this.blockSize = options.blockSize;
    this.#clock = options.clock ?? (() => performance.now());
    this.#missReasons = { absent: 0, vanished: 0, unavailable: 0, ...(Object.fromEntries(ENTRY_REASONS.map((r) => [r, 0])) as Record<StoreEntryReason, number>) };
  }

  /** The keys of every state of `stream` under this store's namespace, shortest first. */
  chain(stream: ContextStream): Promise<StreamChain> {
    return streamChain(this.namespace, stream, this.blockSize);
  }

  /** Which of `keys` the tier holds, by one `hasMany` where it has one. */
  async #presence(tier: StoreTier, keys: readonly string[]): Promise<boolean[]> {
    try {
      if (tier.hasMany) return await tier.hasMany(keys);
      return await Promise.all(keys.map((key) => tier.has(key)));
    } catch {
      this.#missReasons.unavailable++;
      return keys.map(() => false);
    }
  }

  /**
   * The longest saved state of `stream` that passes the reader's checks (its token count must be the link's).
   * Tries links longest first and, for each, the tiers front first; a refused entry is deleted from its tier and
   * counted by reason. A hit from a lower tier is copied into the tiers in front of it.
   *
   * @throws InvalidArgumentError for a malformed stream (see normalizeStream); never for stored bytes or a
   *   failing tier (those are misses by reason).
   */
  async lookup(stream: ContextStream, expect: StoreExpectation = {}): Promise<StoreLookup> {
    const chain = await this.chain(stream);
    return this.#lookupChain(chain, streamTokens(stream), expect);
  }

  async #lookupChain(chain: StreamChain, queryTokens: number, expect: StoreExpectation): Promise<StoreLookup> {
    this.#lookups++;
    this.#queryTokens += queryTokens;
    const keys = chain.links.map((link) => link.key);
    const presence = await Promise.all(this.tiers.map((tier) => this.#presence(tier, keys)));
    const refused: { key: string; tier: string; reason: StoreMissReason }[] = [];
    for (let i = chain.links.length - 1; i >= 0; i--) {
      const link = chain.links[i] as StreamLink;
      for (let t = 0; t < this.tiers.length; t++) {
        if (!presence[t]?.[i]) continue;
        const tier = this.tiers[t] as StoreTier;
        const started = this.#clock();
        let bytes: Uint8Array | null;
        try {
          bytes = await tier.get(link.key);
        } catch {
          // A tier that fails (an I/O error) costs this lookup that tier's entry, not the request.
          this.#missReasons.unavailable++;
          refused.push({ key: link.key, tier: tier.name, reason: 'unavailable' });
          continue;
        }
        if (bytes === null) {
          this.#missReasons.vanished++;
          refused.push({ key: link.key, tier: tier.name, reason: 'vanished' });
          continue;
        }
        let entry: StoreEntry;
        try {
          entry = await decodeStoreEntry(bytes, { ...expect, tokenCount: link.tokens });
        } catch (error) {
          if (!(error instanceof StoreEntryError)) throw error;
          this.#missReasons[error.reason]++;
          refused.push({ key: link.key, tier: tier.name, reason: error.reason });
          await tier.delete(link.key).catch(() => undefined); // refused either way; a failed delete is refused again next time
          continue;
        }
        const restoreMs = this.#clock() - started;
        this.#hits++;
        this.#hitTokens += link.tokens;
        this.#restoreTotal += restoreMs;
        this.#restoreLast = restoreMs;
        const partial = i < chain.links.length - 1;
        if (partial) this.#partialHits++;
        if (t > 0) await this.#promote(t, link, bytes);
        return { hit: true, link, key: link.key, entry, bytes: bytes.length, tier: tier.name, partial, restoreMs, queryTokens };
      }
    }
    this.#misses++;
    if (refused.length === 0) this.#missReasons.absent++;
    return { hit: false, queryTokens, refused };
  }

  /** Copies a hit into the tiers in front of tier `t`. A failed copy (a full disk) costs a later hit, not this one. */
  async #promote(t: number, link: StreamLink, bytes: Uint8Array): Promise<void> {
    for (let front = 0; front < t; front++) {
      try {
        await (this.tiers[front] as StoreTier).put(link.key, bytes, { prefillTokens: link.tokens });
        this.#promotions++;
      } catch {
        this.#promotionFailures++;
      }
    }
  }

  /**
   * Saves a state under a link (or a raw key) in the front tier. A StoreEntry is encoded; bytes are stored as
   * given (they must be an encoded entry; the reader checks them on every lookup anyway).
   *
   * @throws InvalidArgumentError when an entry's token count differs from the link's (it would never be found),
   *   and as the front tier's put (a pinned entry that does not fit: LimitExceededError).
   */
  async save(target: StreamLink | string, data: StoreEntry | Uint8Array, options: SaveOptions = {}): Promise<SavedEntry> {
    const link = typeof target === 'string' ? null : target;
    const key = typeof target === 'string' ? target : target.key;
    if (link !== null && !(data instanceof Uint8Array) && data.tokenCount !== link.tokens) {
      throw new InvalidArgumentError('entry.tokenCount', `is ${data.tokenCount}; the link covers ${link.tokens} tokens (save the state of that link)`);
    }
    const bytes = data instanceof Uint8Array ? data : await encodeStoreEntry(data);
    const prefillTokens = options.prefillTokens ?? link?.tokens ?? (data instanceof Uint8Array ? 1 : data.tokenCount);
    const front = this.tiers[0] as StoreTier;
    const stored = await front.put(key, bytes, {
      prefillTokens,
      ...(options.ttlMs !== undefined ? { ttlMs: options.ttlMs } : {}),
      ...(options.pinned !== undefined ? { pinned: options.pinned } : {}),
    });
    this.#saves++;
    return { key, bytes: bytes.length, stored };
  }

  /**
   * Runs `fn` once per key at a time: a call while one for the same key is running gets that call's promise.
   * The key is free again once it settles (a rejection is shared by the waiters, then forgotten).
   */
  inflight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const running = this.#inflight.get(key);
    if (running !== undefined) return running as Promise<T>;
    const promise = (async () => fn())().finally(() => this.#inflight.delete(key));
    this.#inflight.set(key, promise);
    return promise;
  }

  /**
   * The whole stream's saved state, or: compute it once and save it. Concurrent calls for one stream compute it
   * once; the others wait, then hit. `compute` gets what the lookup found (a partial hit to continue from, or a
   * miss) and returns the entry of the whole stream (its token count must be the stream's). If it throws, that
   * caller gets the error and a waiter tries again (becoming the one that computes); so does a waiter that still
   * misses after the save (the front tier had no room and no next tier).
   *
   * @throws InvalidArgumentError for a stream of no tokens (it has no state to save).
   */
  async lookupOrCompute(
    stream: ContextStream,
    expect: StoreExpectation,
    compute: (found: StoreLookup) => Promise<StoreEntry | Uint8Array>,
    options: SaveOptions = {},
  ): Promise<LookupOrComputeResult> {
    const chain = await this.chain(stream);
    const last = chain.links[chain.links.length - 1];
    if (last === undefined) throw new InvalidArgumentError('stream', 'has no tokens: there is no state to look up or save');
    const queryTokens = streamTokens(stream);
    for (;;) {
      const running = this.#inflight.get(last.key);
      if (running !== undefined) {
        await running.catch(() => undefined);
        const found = await this.#lookupChain(chain, queryTokens, expect);
        if (found.hit && !found.partial) return { computed: false, found };
        continue; // it failed or was evicted at once: compute here (or wait for whoever does now)
      }
      return this.inflight(last.key, async (): Promise<LookupOrComputeResult> => {
        const found = await this.#lookupChain(chain, queryTokens, expect);
        if (found.hit && !found.partial) return { computed: false, found };
        const saved = await this.save(last, await compute(found), options);
        return { computed: true, found, saved };
      });
    }
  }

  /** Every live entry of every tier, front first (an entry in two tiers is listed twice). */
  async list(): Promise<StoreListing[]> {
    const out: StoreListing[] = [];
    for (const tier of this.tiers) {
      if (tier.list) {
        for (const info of await tier.list()) out.push({ key: info.key, tier: tier.name, bytes: info.bytes, tokens: info.prefillTokens, pinned: info.pinned, expiresAtMs: info.expiresAtMs });
      } else {
        for (const key of await tier.keys()) out.push({ key, tier: tier.name, bytes: null, tokens: null, pinned: null, expiresAtMs: null });
      }
    }
    return out;
  }

  /** Deletes every entry of every tier, pinned ones too; resolves how many. */
  async clear(): Promise<number> {
    let count = 0;
    for (const tier of this.tiers) {
      if (tier.clear) count += await tier.clear();
      else for (const key of await tier.keys()) if (await tier.delete(key)) count++;
    }
    return count;
  }

  async stats(): Promise<ContextStoreStats> {
    const tiers = await Promise.all(this.tiers.map(async (tier) => ({ name: tier.name, ...(await tier.stats()) })));
    const evictions: Record<EvictionReason, number> = { ttl: 0, capacity: 0, explicit: 0 };
    for (const tier of tiers) for (const reason of Object.keys(evictions) as EvictionReason[]) evictions[reason] += tier.evictions[reason];
    return {
      lookups: this.#lookups,
      hits: this.#hits,
      partialHits: this.#partialHits,
      misses: this.#misses,
      missReasons: { ...this.#missReasons },
      hitTokens: this.#hitTokens,
      queryTokens: this.#queryTokens,
      hitRate: this.#queryTokens > 0 ? this.#hitTokens / this.#queryTokens : 0,
      promotions: this.#promotions,
      promotionFailures: this.#promotionFailures,
      saves: this.#saves,
      restoreMs: { total: this.#restoreTotal, last: this.#restoreLast },
      tiers,
      evictions,
    };
  }
}
