import { DecodeCompressor } from '../compress/decode-compression.js';
import type { DecodeSchedule } from '../compress/decode-schedule.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { KvCompactError } from '../errors.js';
import type { GpuLlama } from '../model/gpu-llama.js';
import { streamTokens, type ContextSegment, type ContextStream } from '../store/context-stream.js';
import type { CacheStateSettings } from '../store/keys.js';
import { replayStream, splitLastPrefill, streamRest } from './context-replay.js';
import type { ContextReuse, ReuseHit, ReuseTarget } from './context-reuse.js';
import type { GenerationStoreReport } from './generation-types.js';

/** Where a generation starts: the sequence it fills, the stream of history and prompt, and the store it may use. */
export interface GenerationStartInputs {
  readonly model: GpuLlama;
  readonly cache: PagedKvCache;
  /** Live and empty; with a store it is freed first, so that a hit forks or imports into it. */
  readonly seqId: number;
  readonly schedule: DecodeSchedule | null;
  /** History then prompt, normalized. */
  readonly stream: ContextStream;
  readonly store?: ContextReuse;
  readonly settings: CacheStateSettings;
}

/**
 * A generation with its history and prompt in the cache: the logits of the first token, the decode compressor
 * that goes on from there, and the store bookkeeping (what was restored, how many states were saved).
 */
export class GenerationStart {
  private savedStates: number;

  constructor(
    readonly logits: Float32Array,
    readonly decode: DecodeCompressor | null,
    readonly target: ReuseTarget,
    readonly stream: ContextStream,
    readonly hit: ReuseHit | null,
    private readonly store: ContextReuse | undefined,
    savedDuringReplay: number,
  ) {
    this.savedStates = savedDuringReplay;
  }

  /** Saves the state the sequence is in now, which `stream` built (nothing without a store). */
  async save(stream: ContextStream): Promise<void> {
    if (this.store && (await this.store.save(stream, this.target))) this.savedStates++;
  }

  /** The generation's `report.store`, or null without a store. */
  storeReport(): GenerationStoreReport | null {
    if (!this.store) return null;
    const promptTokens = streamTokens(this.stream);
    const hitTokens = this.hit?.tokens ?? 0;
    return { hit: this.hit !== null, hitTokens, promptTokens, prefillTokens: promptTokens - hitTokens, restoreMs: this.hit?.restoreMs ?? 0, saved: this.savedStates };
  }
}

/**
 * Puts the history and prompt of a generation in the cache: restores the longest state the store holds (below the
 * whole stream: a state covering every token would leave none to forward for the first logits), then replays the
 * rest as it was first built, saving at each segment end and at the last block boundary of the prompt, where a
 * repeated prompt restores from. Plain and speculative generation both start here, so both reuse states.
 *
 * @example
 * ```ts
 * const start = await startGeneration({ model, cache, seqId, schedule, stream, store, settings });
 * const first = sample(start.logits);
 * ```
 */
export async function startGeneration(inputs: GenerationStartInputs): Promise<GenerationStart> {
  const { model, cache, seqId, schedule, stream, store, settings } = inputs;
  const decode = schedule ? new DecodeCompressor(cache, schedule) : null;
  const target: ReuseTarget = { cache, seqId, decode, settings };
  let hit: ReuseHit | null = null;
  let saved = 0;
  if (store) {
    await cache.freeSequence(seqId);
    hit = await store.restore(stream, streamTokens(stream), target);
    if (!hit) cache.addSequence(seqId);
  }
  const done = hit?.segmentsUpTo ?? [];
  const rest: ContextSegment[] = hit ? streamRest(stream, done) : [...stream];
  const replayed = await replayStream(
    { model, cache, seqId, decode },
    store ? splitLastPrefill(rest, streamTokens(done), cache.shape.blockSize) : rest,
    store
      ? async (upTo) => {
          if (await store.save([...done, ...upTo], target)) saved++;
        }
      : undefined,
  );
  if (replayed.logits === null) throw new KvCompactError('internal: a generation stream forwarded no token');
  return new GenerationStart(replayed.logits, decode, target, stream, hit, store, saved);
}
