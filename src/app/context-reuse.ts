import type { DecodeCounters } from '../compress/decode-compression.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { InvalidArgumentError } from '../errors.js';
import { streamChain, streamTokens, type ContextStream } from '../store/context-stream.js';
import type { CacheStateSettings, StoreNamespace } from '../store/keys.js';

/**
 * The sequence a reuse store restores into or saves from: the generator's compressed sequence, its decode
 * compressor (whose counters travel with the state) and the settings its namespace holds.
 */
export interface ReuseTarget {
  readonly cache: PagedKvCache;
  readonly seqId: number;
  /** The sequence's decode compressor (a DecodeCompressor), or null when it never compresses. */
  readonly decode: { counters(): DecodeCounters; resume(counters: DecodeCounters): void } | null;
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
  /** Bytes the saved states hold (a GPU-resident state: the bytes of its blocks, shared ones counted per state). */
  bytesStored(): Promise<number>;
}

interface Resident {
  readonly seqId: number;
  readonly cache: PagedKvCache;
  readonly counters: DecodeCounters | null;
  readonly settings: CacheStateSettings;
  readonly tokens: number;
  readonly segmentsUpTo: ContextStream;
  used: number;
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
   * Where a state evicted for room goes (exported to bytes: a StoreStates over memory or a directory), and where
   * a miss looks next. Default none: an evicted state is dropped.
   */
  readonly next?: ContextReuse;
}

/**
 * The GPU-resident tier: each saved state is a fork of the sequence that reached it (blocks shared by reference
 * count, copied on the next write), and a hit forks it back, so neither a save nor a restore copies a block. The
 * least recently used state gives its sequence id up when all are taken. Make it with
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
  /** States handed to `next` for room. */
  demotions = 0;

  constructor(private readonly options: ResidentStatesOptions) {
    if (options.seqIds.length === 0) throw new InvalidArgumentError('seqIds', 'must name at least one sequence id for saved states');
  }

  private namespace(settings: CacheStateSettings): StoreNamespace {
    return { modelFingerprint: this.options.modelFingerprint, settings, tenantSalt: this.options.tenantSalt };
  }

  async restore(stream: ContextStream, below: number, target: ReuseTarget): Promise<ReuseHit | null> {
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
      return { tokens: state.tokens, segmentsUpTo: state.segmentsUpTo, restoreMs: performance.now() - started };
    }
    const lower = await this.options.next?.restore(stream, below, target);
    return lower ? { ...lower, restoreMs: performance.now() - started } : null;
  }

  async save(stream: ContextStream, target: ReuseTarget): Promise<boolean> {
    const chain = await streamChain(this.namespace(target.settings), stream, target.cache.shape.blockSize);
    const link = chain.links[chain.links.length - 1];
    if (link === undefined || link.tokens !== streamTokens(stream)) return false;
    const present = this.states.get(link.key);
    if (present !== undefined && present.cache === target.cache) {
      present.used = ++this.clock;
      return false;
    }
    const seqId = await this.freeSeqId();
    await target.cache.fork(target.seqId, seqId);
    this.states.set(link.key, {
      seqId,
      cache: target.cache,
      counters: target.decode?.counters() ?? null,
      settings: target.settings,
      tokens: link.tokens,
      segmentsUpTo: link.segmentsUpTo,
      used: ++this.clock,
    });
    return true;
  }

  async bytesStored(): Promise<number> {
    let bytes = 0;
    for (const state of this.states.values()) bytes += state.cache.sequenceBytes(state.seqId).bytes;
    return bytes + ((await this.options.next?.bytesStored()) ?? 0);
  }

  /** Saved states, oldest use first. */
  entries(): { key: string; tokens: number; bytes: number }[] {
    return [...this.states.entries()]
      .sort((a, b) => a[1].used - b[1].used)
      .map(([key, state]) => ({ key, tokens: state.tokens, bytes: state.cache.sequenceBytes(state.seqId).bytes }));
  }

  /** Frees every saved state's sequence. */
  async clear(): Promise<void> {
    for (const state of this.states.values()) await state.cache.freeSequence(state.seqId);
    this.states.clear();
  }

  private async freeSeqId(): Promise<number> {
    const taken = new Set([...this.states.values()].map((state) => state.seqId));
    const free = this.options.seqIds.find((id) => !taken.has(id));
    if (free !== undefined) return free;
    let oldest: [string, Resident] | undefined;
    for (const entry of this.states.entries()) if (oldest === undefined || entry[1].used < oldest[1].used) oldest = entry;
    if (oldest === undefined) throw new InvalidArgumentError('seqIds', 'has no id to save a state in');
    const [key, state] = oldest;
    this.states.delete(key);
    if (this.options.next) {
      // Demoted, not dropped: the next tier keeps its bytes.
      const counters = state.counters;
      const decode = counters ? { counters: () => counters, resume: () => undefined } : null;
      await this.options.next.save(state.segmentsUpTo, { cache: state.cache, seqId: state.seqId, decode, settings: state.settings });
      this.demotions++;
    }
    await state.cache.freeSequence(state.seqId);
    return state.seqId;
  }
}
