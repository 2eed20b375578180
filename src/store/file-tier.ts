/**
 * A tier of one file per entry, over any place that stores named files: a directory on disk (src/node/
 * directory-tier.ts), OPFS or IndexedDB in a browser (browser-tier.ts). The backend only lists, reads, writes
 * (all or nothing) and removes files; this class keeps the index (sizes, TTLs, pinning, recency), the limits,
 * the eviction policy and the demotion to a next tier, exactly as MemoryTier does in memory.
 *
 * An entry's metadata travels in its file name, `<key>~<expiresAtMs|n>~<p|u>~<prefillTokens>.kvc`, so one atomic
 * write (a rename on disk) stores the bytes and the metadata together: no sidecar can disagree with its file
 * after a crash. Hits are counted in memory only; recency survives a reopen through the file's modification time.
 * Index changes happen synchronously before the first await of a call, as in MemoryTier, so concurrent calls
 * never see a half-made change.
 */
import { InvalidArgumentError, LimitExceededError } from '../errors.js';
import { evictionOrder, evictionPolicy, type EvictionCandidate, type EvictionPolicy, type EvictionPolicyName } from './eviction.js';
import type { EvictionReason, MissReason, PutOptions, StoreTier, TierEntryInfo, TierStats } from './tier.js';

/** One file a backend holds. */
export interface BackendFile {
  readonly name: string;
  readonly bytes: number;
  /** Modification time in ms (the clock of the backend; only its order matters). */
  readonly modifiedMs: number;
}

/** Where a {@link FileTier} keeps its files. */
export interface FileTierBackend {
  /** The entry files present (names ending in `.kvc`); a backend drops its own leftovers (temp files) here. */
  list(): Promise<BackendFile[]>;
  /** The file's bytes, or null when there is no such file. */
  read(name: string): Promise<Uint8Array | null>;
  /** Stores the file all or nothing: after a crash, `name` holds the old bytes, the new bytes, or nothing. */
  write(name: string, bytes: Uint8Array): Promise<void>;
  /** Removes the file; no error when it is already gone. */
  remove(name: string): Promise<void>;
  /** Optional: marks the file used now (its modification time), so recency survives a reopen. */
  touch?(name: string): Promise<void>;
}

/** Options of {@link FileTier.open}. */
export interface FileTierOptions {
  readonly name: string;
  /** Bytes of entries the tier holds at most. Default Infinity. */
  readonly maxBytes?: number;
  /** Default Infinity. */
  readonly maxEntries?: number;
  /** TTL of an entry whose put gives none; null (the default): until evicted. */
  readonly defaultTtlMs?: number | null;
  /** Default 'lru'. */
  readonly eviction?: EvictionPolicyName | EvictionPolicy;
  /** Where entries evicted for room go (and entries too large for this tier). */
  readonly next?: StoreTier;
  /** Clock in ms for TTLs and recency. Default Date.now. */
  readonly now?: () => number;
}

/** The metadata a file name carries. */
export interface EntryFileName {
  readonly key: string;
  readonly expiresAtMs: number | null;
  readonly pinned: boolean;
  readonly prefillTokens: number;
}

/** Keys a file tier accepts: what is safe as a file name on every platform (store keys are lower-case hex). */
export const FILE_KEY_PATTERN = /^[A-Za-z0-9_-]{1,200}$/;

const SUFFIX = '.kvc';

/** The file name of an entry. @throws InvalidArgumentError for a key outside {@link FILE_KEY_PATTERN}. */
export function entryFileName(entry: EntryFileName): string {
  if (!FILE_KEY_PATTERN.test(entry.key)) throw new InvalidArgumentError('key', `must match ${FILE_KEY_PATTERN} to name a file; got "${entry.key}"`);
  return `${entry.key}~${entry.expiresAtMs === null ? 'n' : String(entry.expiresAtMs)}~${entry.pinned ? 'p' : 'u'}~${String(entry.prefillTokens)}${SUFFIX}`;
}

/** The metadata of an entry file name, or null for a name this tier did not write (it is then left alone). */
export function parseEntryFileName(name: string): EntryFileName | null {
  if (!name.endsWith(SUFFIX)) return null;
  const parts = name.slice(0, -SUFFIX.length).split('~');
  if (parts.length !== 4) return null;
  const [key, expires, pin, prefill] = parts as [string, string, string, string];
  if (!FILE_KEY_PATTERN.test(key) || (pin !== 'p' && pin !== 'u') || expires === '' || prefill === '') return null;
  const expiresAtMs = expires === 'n' ? null : Number(expires);
  const prefillTokens = Number(prefill);
  if ((expiresAtMs !== null && !Number.isFinite(expiresAtMs)) || !Number.isFinite(prefillTokens) || prefillTokens < 0) return null;
  return { key, expiresAtMs, pinned: pin === 'p', prefillTokens };
}

interface Slot {
  readonly file: string;
  readonly bytes: number;
  readonly expiresAtMs: number | null;
  readonly pinned: boolean;
  readonly prefillTokens: number;
  hits: number;
  lastUsedMs: number;
  useOrder: number;
}

function checkTtl(field: string, ttl: number | null): number | null {
  if (ttl !== null && !(ttl > 0)) throw new InvalidArgumentError(field, `must be a positive number of milliseconds or null; got ${ttl}`);
  return ttl;
}

function checkLimit(field: string, value: number): number {
  if (!(value >= 0) || (Number.isFinite(value) && !Number.isInteger(value))) throw new InvalidArgumentError(field, `must be an integer ≥ 0 or Infinity; got ${value}`);
  return value;
}

/**
 * A tier of one file per entry over a {@link FileTierBackend}. Open it with {@link FileTier.open}, which rebuilds
 * the index from the files there.
 *
 * @example
 * ```ts
 * const tier = await FileTier.open(backend, { name: 'disk', maxBytes: 8 << 30, eviction: 'priority-decay' });
 * ```
 */
export class FileTier implements StoreTier {
  readonly name: string;
  readonly maxBytes: number;
  readonly maxEntries: number;
  readonly defaultTtlMs: number | null;
  readonly policy: EvictionPolicy;
  readonly #backend: FileTierBackend;
  readonly #next: StoreTier | undefined;
  readonly #now: () => number;
  readonly #slots = new Map<string, Slot>();
  /** Entries evicted for room while their hand-over to the next tier runs: still readable (as in MemoryTier). */
  readonly #demoting = new Map<string, Slot>();
  #bytes = 0;
  #pinnedEntries = 0;
  #pinnedBytes = 0;
  #useOrder = 0;
  #hits = 0;
  readonly #misses: Record<MissReason, number> = { absent: 0, expired: 0 };
  readonly #evictions: Record<EvictionReason, number> = { ttl: 0, capacity: 0, explicit: 0 };
  #demotions = 0;
  #rejected = 0;

  private constructor(backend: FileTierBackend, options: FileTierOptions) {
    this.name = options.name;
    this.maxBytes = checkLimit('maxBytes', options.maxBytes ?? Number.POSITIVE_INFINITY);
    this.maxEntries = checkLimit('maxEntries', options.maxEntries ?? Number.POSITIVE_INFINITY);
    this.defaultTtlMs = checkTtl('defaultTtlMs', options.defaultTtlMs ?? null);
    this.policy = evictionPolicy(options.eviction ?? 'lru');
    this.#backend = backend;
    this.#next = options.next;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Opens the tier: lists the backend's files and indexes every entry file (oldest modification first, so LRU
   * order survives), then evicts down to the limits if the files there exceed them. Of two files of one key (a crash between writing a replacement and removing the old file)
   * the newer stays and the older is removed.
   */
  static async open(backend: FileTierBackend, options: FileTierOptions): Promise<FileTier> {
    const tier = new FileTier(backend, options);
    const files = (await backend.list()).slice().sort((a, b) => a.modifiedMs - b.modifiedMs);
    const stale: string[] = [];
    for (const file of files) {
      const meta = parseEntryFileName(file.name);
      if (meta === null) continue;
      const previous = tier.#slots.get(meta.key);
      if (previous !== undefined) {
        tier.#removeSlot(meta.key, previous);
        stale.push(previous.file);
      }
      tier.#addSlot(meta.key, { file: file.name, bytes: file.bytes, expiresAtMs: meta.expiresAtMs, pinned: meta.pinned, prefillTokens: meta.prefillTokens, hits: 0, lastUsedMs: file.modifiedMs, useOrder: 0 });
    }
    for (const name of stale) await backend.remove(name);
    // Limits lowered since the files were written: trim now (demoting as a put would), not at the next put.
    await tier.#handOver(tier.#evictFor(0, 0, tier.#now()), tier.#now());
    return tier;
  }

  #addSlot(key: string, slot: Slot): void {
    slot.useOrder = ++this.#useOrder;
    this.#slots.set(key, slot);
    this.#bytes += slot.bytes;
    if (slot.pinned) {
      this.#pinnedEntries++;
      this.#pinnedBytes += slot.bytes;
    }
  }

  #removeSlot(key: string, slot: Slot): void {
    this.#slots.delete(key);
    this.#bytes -= slot.bytes;
    if (slot.pinned) {
      this.#pinnedEntries--;
      this.#pinnedBytes -= slot.bytes;
    }
  }

  #expired(slot: Slot, nowMs: number): boolean {
    return !slot.pinned && slot.expiresAtMs !== null && nowMs >= slot.expiresAtMs;
  }

  /** Drops expired entries from the index (`ttl` evictions, never demoted) and returns their files to remove. */
  #purgeIndex(nowMs: number): string[] {
    const files: string[] = [];
    for (const [key, slot] of this.#slots) {
      if (!this.#expired(slot, nowMs)) continue;
      this.#removeSlot(key, slot);
      this.#evictions.ttl++;
      files.push(slot.file);
    }
    return files;
  }

  async #removeFiles(files: readonly string[]): Promise<void> {
    for (const file of files) await this.#backend.remove(file);
  }

  /** Removes every expired entry; resolves how many. */
  async purgeExpired(): Promise<number> {
    const files = this.#purgeIndex(this.#now());
    await this.#removeFiles(files);
    return files.length;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const nowMs = this.#now();
    const slot = this.#slots.get(key);
    if (slot === undefined) {
      const demoting = this.#demoting.get(key);
      const bytes = demoting === undefined ? null : await this.#backend.read(demoting.file);
      if (bytes !== null) this.#hits++;
      else this.#misses.absent++;
      return bytes;
    }
    if (this.#expired(slot, nowMs)) {
      this.#removeSlot(key, slot);
      this.#evictions.ttl++;
      this.#misses.expired++;
      await this.#backend.remove(slot.file);
      return null;
    }
    slot.hits++;
    slot.lastUsedMs = nowMs;
    slot.useOrder = ++this.#useOrder;
    const bytes = await this.#backend.read(slot.file);
    if (bytes === null) {
      // Removed behind the tier's back (by hand, or by another process sharing the directory).
      if (this.#slots.get(key) === slot) this.#removeSlot(key, slot);
      this.#misses.absent++;
      return null;
    }
    this.#hits++;
    await this.#backend.touch?.(slot.file);
    return bytes;
  }

  async has(key: string): Promise<boolean> {
    const slot = this.#slots.get(key);
    return slot !== undefined ? !this.#expired(slot, this.#now()) : this.#demoting.has(key);
  }

  async hasMany(keys: readonly string[]): Promise<boolean[]> {
    const nowMs = this.#now();
    return keys.map((key) => {
      const slot = this.#slots.get(key);
      return slot !== undefined ? !this.#expired(slot, nowMs) : this.#demoting.has(key);
    });
  }

  /**
   * @throws InvalidArgumentError for a key that cannot name a file, a TTL ≤ 0 or a negative prefill.
   * @throws LimitExceededError for a pinned entry that does not fit beside the pinned ones.
   */
  async put(key: string, bytes: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    const ttlMs = checkTtl('ttlMs', options.ttlMs === undefined ? this.defaultTtlMs : options.ttlMs);
    const prefillTokens = options.prefillTokens ?? 1;
    if (!(prefillTokens >= 0) || !Number.isFinite(prefillTokens)) throw new InvalidArgumentError('prefillTokens', `must be a number ≥ 0; got ${prefillTokens}`);
    const pinned = options.pinned ?? false;
    const size = bytes.length;
    const nowMs = this.#now();
    const expiresAtMs = ttlMs === null ? null : nowMs + ttlMs;
    const file = entryFileName({ key, expiresAtMs, pinned, prefillTokens });
    const previous = this.#slots.get(key);
    const pinnedBytes = this.#pinnedBytes - (previous?.pinned ? previous.bytes : 0) + (pinned ? size : 0);
    const pinnedEntries = this.#pinnedEntries - (previous?.pinned ? 1 : 0) + 1;
    if (pinned && (pinnedBytes > this.maxBytes || pinnedEntries > this.maxEntries)) {
      throw new LimitExceededError(`${this.name} pinned bytes`, pinnedBytes, this.maxBytes, `pinned entries are never evicted (${pinnedEntries} of at most ${this.maxEntries} entries); unpin some or raise maxBytes / maxEntries`);
    }
    if (!pinned && (pinnedBytes + size > this.maxBytes || pinnedEntries > this.maxEntries)) {
      if (previous !== undefined) {
        // The key's old bytes must not outlive the put that replaced them (a replacement, not an eviction).
        this.#removeSlot(key, previous);
        await this.#backend.remove(previous.file);
      }
      this.#rejected++;
      if (this.#next) await this.#next.put(key, bytes, { ttlMs, prefillTokens });
      return false;
    }
    await this.#backend.write(file, bytes);

    // The file is in place: index it (replacing whatever slot the key has now, perhaps a concurrent put's).
    const stale: string[] = this.#purgeIndex(nowMs);
    const replaced = this.#slots.get(key);
    if (replaced !== undefined) {
      this.#removeSlot(key, replaced);
      if (replaced.file !== file) stale.push(replaced.file);
    }
    const victims = this.#evictFor(size, 1, nowMs);
    this.#addSlot(key, { file, bytes: size, expiresAtMs, pinned, prefillTokens, hits: 0, lastUsedMs: nowMs, useOrder: 0 });
    await this.#handOver(victims, nowMs);
    await this.#removeFiles(stale);
    return true;
  }

  /** Takes unpinned entries out of the index, in the policy's order, until `size` more bytes and `entries` more fit. */
  #evictFor(size: number, entries: number, nowMs: number): { key: string; slot: Slot }[] {
    const fits = (): boolean => this.#bytes + size <= this.maxBytes && this.#slots.size + entries <= this.maxEntries;
    const victims: { key: string; slot: Slot }[] = [];
    if (fits()) return victims;
    const candidates: EvictionCandidate[] = [];
    for (const [key, slot] of this.#slots) {
      if (!slot.pinned) candidates.push({ key, bytes: slot.bytes, hits: slot.hits, lastUsedMs: slot.lastUsedMs, useOrder: slot.useOrder, prefillTokens: slot.prefillTokens });
    }
    for (const candidate of evictionOrder(candidates, this.policy, nowMs)) {
      if (fits()) break;
      const slot = this.#slots.get(candidate.key) as Slot;
      this.#removeSlot(candidate.key, slot);
      this.#evictions.capacity++;
      victims.push({ key: candidate.key, slot });
    }
    return victims;
  }

  /** Hands evicted entries to the next tier (readable here until it holds them) and removes their files. */
  async #handOver(victims: readonly { key: string; slot: Slot }[], nowMs: number): Promise<void> {
    if (this.#next) for (const victim of victims) this.#demoting.set(victim.key, victim.slot);
    for (const victim of victims) {
      try {
        if (this.#next) {
          const victimBytes = await this.#backend.read(victim.slot.file);
          if (victimBytes !== null) {
            this.#demotions++;
            const left = victim.slot.expiresAtMs;
            await this.#next.put(victim.key, victimBytes, { ttlMs: left === null ? null : Math.max(1, left - nowMs), prefillTokens: victim.slot.prefillTokens });
          }
        }
      } finally {
        if (this.#demoting.get(victim.key) === victim.slot) this.#demoting.delete(victim.key);
      }
      // A put of the same key while this one demoted it may have written the same name again: keep that file.
      if (this.#slots.get(victim.key)?.file !== victim.slot.file) await this.#backend.remove(victim.slot.file);
    }
  }

  async delete(key: string): Promise<boolean> {
    this.#demoting.delete(key);
    const slot = this.#slots.get(key);
    if (slot === undefined) return false;
    this.#removeSlot(key, slot);
    this.#evictions.explicit++;
    await this.#backend.remove(slot.file);
    return true;
  }

  async clear(): Promise<number> {
    const files = [...this.#slots.values()].map((slot) => slot.file);
    this.#evictions.explicit += files.length;
    this.#slots.clear();
    this.#bytes = 0;
    this.#pinnedEntries = 0;
    this.#pinnedBytes = 0;
    await this.#removeFiles(files);
    return files.length;
  }

  async keys(): Promise<string[]> {
    await this.purgeExpired();
    return [...this.#slots.keys()];
  }

  async list(): Promise<TierEntryInfo[]> {
    await this.purgeExpired();
    return [...this.#slots].map(([key, slot]) => ({ key, bytes: slot.bytes, pinned: slot.pinned, expiresAtMs: slot.expiresAtMs, prefillTokens: slot.prefillTokens, hits: slot.hits }));
  }

  async stats(): Promise<TierStats> {
    await this.purgeExpired();
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
