/**
 * The host-memory tier: serialized entries in a Map, bounded by bytes and by entries, with TTLs on an injected
 * clock, pinning, a pluggable eviction policy and demotion of what it evicts for room into a next tier.
 * Every state change happens synchronously inside one call before its first await, so concurrent calls never
 * see a half-made change; only the hand-over of evicted entries to the next tier is awaited.
 */
import { InvalidArgumentError, LimitExceededError } from '../errors.js';
import { evictionOrder, evictionPolicy, type EvictionCandidate, type EvictionPolicy, type EvictionPolicyName } from './eviction.js';
import type { EvictionReason, MissReason, PutOptions, StoreTier, TierEntryInfo, TierStats } from './tier.js';

/** Options of {@link MemoryTier}. */
export interface MemoryTierOptions {
  /** Default 'memory'. */
  readonly name?: string;
  /** Bytes of entries the tier holds at most (Infinity: no limit). */
  readonly maxBytes: number;
  /** Entries the tier holds at most. Default Infinity. */
  readonly maxEntries?: number;
  /** TTL of an entry whose put gives none; null (the default): entries live until evicted. */
  readonly defaultTtlMs?: number | null;
  /** Default 'lru'. */
  readonly eviction?: EvictionPolicyName | EvictionPolicy;
  /** Where entries evicted for room go instead of being dropped (and entries too large for this tier). */
  readonly next?: StoreTier;
  /** Clock in milliseconds. Default Date.now; tests pass a fake one. */
  readonly now?: () => number;
}

interface Slot {
  readonly bytes: Uint8Array;
  readonly expiresAtMs: number | null;
  pinned: boolean;
  hits: number;
  lastUsedMs: number;
  useOrder: number;
  readonly prefillTokens: number;
}

function checkTtl(field: string, ttl: number | null): number | null {
  if (ttl !== null && !(ttl > 0)) throw new InvalidArgumentError(field, `must be a positive number of milliseconds or null; got ${ttl}`);
  return ttl;
}

function checkLimit(field: string, value: number): number {
  if (!(value >= 0) || (Number.isFinite(value) && !Number.isInteger(value))) {
    throw new InvalidArgumentError(field, `must be an integer ≥ 0 or Infinity; got ${value}`);
  }
  return value;
}

/**
 * A tier in host memory.
 *
 * @example
 * ```ts
 * const disk = new MemoryTier({ name: 'second', maxBytes: 1 << 30 });
 * const memory = new MemoryTier({ maxBytes: 64 << 20, maxEntries: 100, defaultTtlMs: 3_600_000, eviction: 'lfu', next: disk });
 * await memory.put(systemPromptKey, bytes, { pinned: true, prefillTokens: 800 });
 * ```
 */
export class MemoryTier implements StoreTier {
  readonly name: string;
  readonly maxBytes: number;
  readonly maxEntries: number;
  readonly defaultTtlMs: number | null;
  readonly policy: EvictionPolicy;
  readonly #next: StoreTier | undefined;
  readonly #now: () => number;
  readonly #slots = new Map<string, Slot>();
  /**
   * Entries evicted for room whose hand-over to the next tier is still under way: still readable here, so a
   * lookup in between finds them in one tier or the other, never in neither (which would compute them again).
   */
  readonly #demoting = new Map<string, Uint8Array>();
  #bytes = 0;
  #pinnedEntries = 0;
  #pinnedBytes = 0;
  #useOrder = 0;
  #hits = 0;
  readonly #misses: Record<MissReason, number> = { absent: 0, expired: 0 };
  readonly #evictions: Record<EvictionReason, number> = { ttl: 0, capacity: 0, explicit: 0 };
  #demotions = 0;
  #rejected = 0;

  constructor(options: MemoryTierOptions) {
    this.name = options.name ?? 'memory';
    this.maxBytes = checkLimit('maxBytes', options.maxBytes);
    this.maxEntries = checkLimit('maxEntries', options.maxEntries ?? Number.POSITIVE_INFINITY);
    this.defaultTtlMs = checkTtl('defaultTtlMs', options.defaultTtlMs ?? null);
    this.policy = evictionPolicy(options.eviction ?? 'lru');
    this.#next = options.next;
    this.#now = options.now ?? Date.now;
  }

  #expired(slot: Slot, nowMs: number): boolean {
    return !slot.pinned && slot.expiresAtMs !== null && nowMs >= slot.expiresAtMs;
  }

  #remove(key: string, slot: Slot): void {
    this.#slots.delete(key);
    this.#bytes -= slot.bytes.length;
    if (slot.pinned) {
      this.#pinnedEntries--;
      this.#pinnedBytes -= slot.bytes.length;
    }
  }

  /** The live slot of `key`; an expired one is removed (a `ttl` eviction) and counts as a miss by `expired`. */
  #live(key: string, nowMs: number): { slot: Slot | undefined; miss: MissReason } {
    const slot = this.#slots.get(key);
    if (slot === undefined) return { slot, miss: 'absent' };
    if (!this.#expired(slot, nowMs)) return { slot, miss: 'absent' };
    this.#remove(key, slot);
    this.#evictions.ttl++;
    return { slot: undefined, miss: 'expired' };
  }

  /** Removes every expired entry (`ttl` evictions, never demoted: they are stale); returns how many. */
  purgeExpired(): number {
    const nowMs = this.#now();
    let purged = 0;
    for (const [key, slot] of this.#slots) {
      if (!this.#expired(slot, nowMs)) continue;
      this.#remove(key, slot);
      this.#evictions.ttl++;
      purged++;
    }
    return purged;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const nowMs = this.#now();
    const { slot, miss } = this.#live(key, nowMs);
    if (slot === undefined) {
      const demoting = miss === 'absent' ? this.#demoting.get(key) : undefined;
      if (demoting !== undefined) {
        this.#hits++;
        return demoting;
      }
      this.#misses[miss]++;
      return null;
    }
    this.#hits++;
    slot.hits++;
    slot.lastUsedMs = nowMs;
    slot.useOrder = ++this.#useOrder;
    return slot.bytes;
  }

  async has(key: string): Promise<boolean> {
    const slot = this.#slots.get(key);
    return slot !== undefined ? !this.#expired(slot, this.#now()) : this.#demoting.has(key);
  }

  /**
   * @throws InvalidArgumentError for an empty key, a TTL ≤ 0 or a negative prefill.
   * @throws LimitExceededError for a pinned entry that does not fit beside the pinned ones (pinned entries are
   *   never evicted: unpin some, or raise maxBytes / maxEntries).
   */
  async put(key: string, bytes: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    if (key === '') throw new InvalidArgumentError('key', 'must not be empty');
    const ttlMs = checkTtl('ttlMs', options.ttlMs === undefined ? this.defaultTtlMs : options.ttlMs);
    const prefillTokens = options.prefillTokens ?? 1;
    if (!(prefillTokens >= 0) || !Number.isFinite(prefillTokens)) throw new InvalidArgumentError('prefillTokens', `must be a number ≥ 0; got ${prefillTokens}`);
    const pinned = options.pinned ?? false;
    const size = bytes.length;
    if (pinned) {
      const previous = this.#slots.get(key);
      const pinnedBytes = this.#pinnedBytes - (previous?.pinned ? previous.bytes.length : 0) + size;
      const pinnedEntries = this.#pinnedEntries - (previous?.pinned ? 1 : 0) + 1;
      if (pinnedBytes > this.maxBytes || pinnedEntries > this.maxEntries) {
        throw new LimitExceededError(
          `${this.name} pinned bytes`,
          pinnedBytes,
          this.maxBytes,
          `pinned entries are never evicted (${pinnedEntries} of at most ${this.maxEntries} entries); unpin some or raise maxBytes / maxEntries`,
        );
      }
    }
    const nowMs = this.#now();
    const previous = this.#slots.get(key);
    if (previous !== undefined) this.#remove(key, previous); // a replacement, not an eviction
    this.purgeExpired();

    if (!pinned && (this.#pinnedBytes + size > this.maxBytes || this.#pinnedEntries + 1 > this.maxEntries)) {
      this.#rejected++;
      if (this.#next) await this.#next.put(key, bytes, { ttlMs, prefillTokens });
      return false;
    }
    const victims: { key: string; slot: Slot }[] = [];
    if (this.#bytes + size > this.maxBytes || this.#slots.size + 1 > this.maxEntries) {
      const candidates: EvictionCandidate[] = [];
      for (const [candidateKey, slot] of this.#slots) {
        if (slot.pinned) continue;
        candidates.push({ key: candidateKey, bytes: slot.bytes.length, hits: slot.hits, lastUsedMs: slot.lastUsedMs, useOrder: slot.useOrder, prefillTokens: slot.prefillTokens });
      }
      for (const candidate of evictionOrder(candidates, this.policy, nowMs)) {
        if (this.#bytes + size <= this.maxBytes && this.#slots.size + 1 <= this.maxEntries) break;
        const slot = this.#slots.get(candidate.key) as Slot;
        this.#remove(candidate.key, slot);
        this.#evictions.capacity++;
        victims.push({ key: candidate.key, slot });
      }
    }
    this.#slots.set(key, {
      bytes,
      expiresAtMs: ttlMs === null ? null : nowMs + ttlMs,
      pinned,
      hits: 0,
      lastUsedMs: nowMs,
      useOrder: ++this.#useOrder,
      prefillTokens,
    });
    this.#bytes += size;
    if (pinned) {
      this.#pinnedEntries++;
      this.#pinnedBytes += size;
    }
    if (this.#next) {
      for (const victim of victims) this.#demoting.set(victim.key, victim.slot.bytes);
      for (const victim of victims) {
        this.#demotions++;
        const expiresAtMs = victim.slot.expiresAtMs;
        try {
          await this.#next.put(victim.key, victim.slot.bytes, {
            ttlMs: expiresAtMs === null ? null : Math.max(1, expiresAtMs - nowMs),
            prefillTokens: victim.slot.prefillTokens,
          });
        } finally {
          if (this.#demoting.get(victim.key) === victim.slot.bytes) this.#demoting.delete(victim.key);
        }
      }
    }
    return true;
  }

  /**
   * Pins or unpins a live entry; resolves whether there was one. An unpinned entry whose TTL ran out while it was
   * pinned expires at once.
   */
  async setPinned(key: string, pinned: boolean): Promise<boolean> {
    const slot = this.#slots.get(key);
    if (slot === undefined || this.#expired(slot, this.#now())) return false;
    if (slot.pinned !== pinned) {
      const sign = pinned ? 1 : -1;
      this.#pinnedEntries += sign;
      this.#pinnedBytes += sign * slot.bytes.length;
      slot.pinned = pinned;
    }
    return true;
  }

  async delete(key: string): Promise<boolean> {
    this.#demoting.delete(key);
    const slot = this.#slots.get(key);
    if (slot === undefined) return false;
    this.#remove(key, slot);
    this.#evictions.explicit++;
    return true;
  }

  /** Deletes every entry, pinned ones too (`explicit` evictions); resolves how many. */
  async clear(): Promise<number> {
    const count = this.#slots.size;
    this.#evictions.explicit += count;
    this.#slots.clear();
    this.#bytes = 0;
    this.#pinnedEntries = 0;
    this.#pinnedBytes = 0;
    return count;
  }

  async hasMany(keys: readonly string[]): Promise<boolean[]> {
    const nowMs = this.#now();
    return keys.map((key) => {
      const slot = this.#slots.get(key);
      return slot !== undefined ? !this.#expired(slot, nowMs) : this.#demoting.has(key);
    });
  }

  async list(): Promise<TierEntryInfo[]> {
    this.purgeExpired();
    return [...this.#slots].map(([key, slot]) => ({
      key,
      bytes: slot.bytes.length,
      pinned: slot.pinned,
      expiresAtMs: slot.expiresAtMs,
      prefillTokens: slot.prefillTokens,
      hits: slot.hits,
    }));
  }

  async keys(): Promise<string[]> {
    this.purgeExpired();
    return [...this.#slots.keys()];
  }

  async stats(): Promise<TierStats> {
    this.purgeExpired();
    return {
      entries: this.#slots.size,
      bytes: this.#bytes,
      pinnedEntries: this.#pinnedEntries,
      pinnedBytes: this.#pinnedBytes,
      hits: this.#hits,
      misses: { ...this.#misses },
      evictions: { ...this.#evictions },
      demotions: this.#demotions,
      rejected: this.#rejected,
    };
  }
}
