import type { DecodeCompressor, DecodeCounters } from '../compress/decode-compression.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { InvalidArgumentError } from '../errors.js';
import { streamChain, streamTokens, type ContextStream } from '../store/context-stream.js';
import type { CacheStateSettings, StoreNamespace } from '../store/keys.js';
import { evictionOrder, priorityDecay } from '../store/eviction.js';

/**
 * The sequence a reuse store restores into or saves from: the generator's compressed sequence, its decode
 * compressor (whose counters travel with the state) and the settings its namespace holds.
 */
export interface ReuseTarget {
  readonly cache: PagedKvCache;
  readonly seqId: number;
  /** What a store needs of the decode compressor: its counters, to save and to resume. */
  readonly decode: Pick<DecodeCompressor, 'counters' | 'resume'> | null;
  readonly settings: CacheStateSettings;
}

/** A restored state. */
export interface ReuseHit {
  /** Tokens of the stream the restored state covers (prefill not computed). */
  readonly tokens: number;
  /** The stream up to the restored state; the caller replays the rest. */
  readonly segmentsUpTo: ContextStream;
  /** Milliseconds the restore took (lookup, read, import). */
  readonly restoreMs: number;
}

/**
 * What a {@link Generator} needs of a store of compressed states: restore the longest saved state of a stream,
 * save the state a stream ends in. {@link ResidentStates} keeps states as forked sequences on the GPU (zero copy);
 * `storeReuse` (src/app/store-reuse.ts) puts a ContextStore of serialized entries behind the same shape.
 *
 * @example
 * ```ts
 * const hit = await reuse.restore(stream, streamTokens(stream) - 1, target); // leave a token to forward
 * ```
 */
export interface ContextReuse {
  /**
   * Restores into `target.seqId` (which must not be live) the longest saved state of `stream` that covers fewer
   * than `below` tokens, and resumes the decode counters; null on a miss (the sequence is then still not live).
   */
  restore(stream: ContextStream, below: number, target: ReuseTarget): Promise<ReuseHit | null>;
  /** Saves the state `target.seqId` is in, which `stream` built; resolves whether a state was saved. */
  save(stream: ContextStream, target: ReuseTarget): Promise<boolean>;
  /** Bytes the saved states hold. */
  bytesStored(): Promise<number>;
  /** The generation on `target` ended (its saves done, or it failed): a store with single flight releases its waiters. */
  finish?(target: ReuseTarget): void;
}

interface Resident {
  readonly seqId: number;
  readonly cache: PagedKvCache;
  readonly counters: DecodeCounters | null;
  readonly tokens: number;
  readonly segmentsUpTo: ContextStream;
  readonly settings: CacheStateSettings;
  /** Order of the last use (save or hit). */
  used: number;
  /** Clock time of the last use. */
  usedMs: number;
  hits: number;
  /** Never evicted, neither by TTL nor for room, until unpinned. */
  pinned: boolean;
}

/**
 * Options of {@link ResidentStates}.
 *
 * @example
 * ```ts
 * const options: ResidentStatesOptions = { seqIds: [16, 17, 18, 19], modelFingerprint: 'stories260K', tenantSalt: '' };
 * ```
 */
export interface ResidentStatesOptions {
  /** Sequence ids the saved states take in the generator's caches (each needs a sequence slot). */
  readonly seqIds: readonly number[];
  readonly modelFingerprint: string;
  readonly tenantSalt: string;
  /**
   * The next tier (a {@link StoreStates} over host memory, a directory, Redis…): a state evicted for room is
   * exported into it instead of dropped, and a state this tier misses is looked up there.
   */
  readonly next?: ContextReuse;
  /** Milliseconds a state may go unused before it is dropped (default: until evicted for room). */
  readonly ttlMs?: number;
  /** The clock of `ttlMs` and priority-decay (default Date.now; tests inject one). */
  readonly now?: () => number;
}

/**
 * The GPU-resident tier: each saved state is a fork of the sequence that reached it (blocks shared by reference
 * count, copied on the next write), and a hit forks it back, so neither a save nor a restore copies a block. When
 * every id is taken, the state of lowest priority-decay (src/store/eviction.ts: hits × prefill saved, halving per
 * idle half-life, per byte) gives its id up: a knowledge prefix every question hits outlives the one-off states of
 * each question, which plain LRU would keep instead. Make it with
 * `Generator.residentStates` (the generator's caches need the extra sequence slots).
 *
 * @example
 * ```ts
 * const generator = Generator.create(gpu, checkpoint, tokenizer, { residentStates: 4 });
 * const store = generator.residentStates({ modelFingerprint: 'stories260K', tenantSalt: '' });
 * await generator.generate({ prompt: question, steps: 16, continueFrom: knowledge, store });
 * ```
 */
export class ResidentStates implements ContextReuse {
  private readonly states = new Map<string, Resident>();
  private clock = 0;

  /** States dropped because their TTL ran out, evicted for room, and of those handed to the next tier. */
  readonly evictions = { ttl: 0, capacity: 0, demoted: 0 };
  private readonly now: () => number;

  constructor(private readonly options: ResidentStatesOptions) {
    if (options.seqIds.length === 0) throw new InvalidArgumentError('seqIds', 'must name at least one sequence id for saved states');
    if (options.ttlMs !== undefined && !(options.ttlMs > 0)) throw new InvalidArgumentError('ttlMs', `must be a positive number of milliseconds; got ${options.ttlMs}`);
    this.now = options.now ?? Date.now;
  }

  /** Drops the states unused for longer than the TTL (not demoted: they expired). */
  private async expire(): Promise<void> {
    const ttl = this.options.ttlMs;
    if (ttl === undefined) return;
    const now = this.now();
    for (const [key, state] of [...this.states.entries()]) {
      if (state.pinned || now - state.usedMs <= ttl) continue;
      this.states.delete(key);
      this.evictions.ttl++;
      await state.cache.freeSequence(state.seqId);
    }
  }

  private namespace(settings: CacheStateSettings): StoreNamespace {
    return { modelFingerprint: this.options.modelFingerprint, settings, tenantSalt: this.options.tenantSalt };
  }

  async restore(stream: ContextStream, below: number, target: ReuseTarget): Promise<ReuseHit | null> {
    await this.expire();
    const hit = await this.restoreResident(stream, below, target);
    return hit ?? (this.options.next ? this.options.next.restore(stream, below, target) : null);
  }

  private async restoreResident(stream: ContextStream, below: number, target: ReuseTarget): Promise<ReuseHit | null> {
    const started = performance.now();
    const chain = await streamChain(this.namespace(target.settings), stream, target.cache.shape.blockSize);
    for (let i = chain.links.length - 1; i >= 0; i--) {
      const link = chain.links[i];
      if (link === undefined || link.tokens >= below) continue;
      const state = this.states.get(link.key);
      if (state === undefined || state.cache !== target.cache) continue;
      await target.cache.fork(state.seqId, target.seqId);
      if (state.counters && target.decode) target.decode.resume(state.counters);
      state.used = ++this.clock;
      state.usedMs = this.now();
      state.hits++;
      return { tokens: state.tokens, segmentsUpTo: state.segmentsUpTo, restoreMs: performance.now() - started };
    }
    return null;
  }

  async save(stream: ContextStream, target: ReuseTarget): Promise<boolean> {
    const chain = await streamChain(this.namespace(target.settings), stream, target.cache.shape.blockSize);
    const link = chain.links[chain.links.length - 1];
    if (link === undefined || link.tokens !== streamTokens(stream)) return false;
    const present = this.states.get(link.key);
    if (present !== undefined && present.cache === target.cache) {
      present.used = ++this.clock;
      present.usedMs = this.now();
      return false;
    }
    await this.expire();
    const seqId = await this.freeSeqId();
    if (seqId === null) return false; // every id holds a pinned state
    await target.cache.fork(target.seqId, seqId);
    this.states.set(link.key, {
      seqId,
      cache: target.cache,
      counters: target.decode?.counters() ?? null,
      tokens: link.tokens,
      segmentsUpTo: link.segmentsUpTo,
      settings: target.settings,
      used: ++this.clock,
      usedMs: this.now(),
      hits: 0,
      pinned: false,
    });
    return true;
  }

  /** Passes the end of a generation on to the next tier (its single flight). */
  finish(target: ReuseTarget): void {
    this.options.next?.finish?.(target);
  }

  /** Bytes the resident states' blocks hold (blocks shared between states counted per state), plus the next tier's. */
  async bytesStored(): Promise<number> {
    let bytes = 0;
    for (const state of this.states.values()) bytes += state.cache.sequenceBytes(state.seqId).bytes;
    return bytes + ((await this.options.next?.bytesStored()) ?? 0);
  }

  /** Saved states, oldest use first. */
  entries(): { key: string; tokens: number; bytes: number; hits: number; pinned: boolean }[] {
    return [...this.states.entries()]
      .sort((a, b) => a[1].used - b[1].used)
      .map(([key, state]) => ({ key, tokens: state.tokens, bytes: state.cache.sequenceBytes(state.seqId).bytes, hits: state.hits, pinned: state.pinned }));
  }

  /**
   * Pins (or unpins) the saved state of `key` (as {@link entries} lists it): a pinned state is never evicted, by TTL
   * or for room, so a knowledge prefix stays on the GPU however many one-off states come and go. Resolves whether
   * the state is held.
   */
  pin(key: string, pinned = true): boolean {
    const state = this.states.get(key);
    if (state === undefined) return false;
    state.pinned = pinned;
    return true;
  }

  /** Frees every saved state's sequence. */
  async clear(): Promise<void> {
    for (const state of this.states.values()) await state.cache.freeSequence(state.seqId);
    this.states.clear();
  }

  private async freeSeqId(): Promise<number | null> {
    const taken = new Set([...this.states.values()].map((state) => state.seqId));
    const free = this.options.seqIds.find((id) => !taken.has(id));
    if (free !== undefined) return free;
    const candidates = [...this.states.entries()].filter(([, s]) => !s.pinned).map(([key, s]) => ({
      key,
      bytes: s.cache.sequenceBytes(s.seqId).bytes,
      hits: s.hits,
      lastUsedMs: s.usedMs,
      useOrder: s.used,
      prefillTokens: s.tokens,
    }));
    const victim = evictionOrder(candidates, priorityDecay(), this.now())[0];
    if (victim === undefined) return null;
    const state = this.states.get(victim.key);
    if (state === undefined) return null;
    this.states.delete(victim.key);
    this.evictions.capacity++;
    if (this.options.next) {
      // Demoted, not dropped: the state is exported (one readback) into the next tier before its sequence goes.
      const counters = state.counters;
      const decode = counters === null ? null : { counters: () => counters, resume: () => {} };
      if (await this.options.next.save(state.segmentsUpTo, { cache: state.cache, seqId: state.seqId, decode, settings: state.settings })) this.evictions.demoted++;
    }
    await state.cache.freeSequence(state.seqId);
    return state.seqId;
  }
}
