import type { DecodeCompressor } from '../compress/decode-compression.js';
import type { DecodeSchedule } from '../compress/decode-schedule.js';
import type { CompressionReport } from '../compress/options.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { InvalidArgumentError } from '../errors.js';
import type { CacheStateSettings } from '../store/keys.js';
import { normalizeStream, type ContextSegment, type ContextStream } from '../store/context-stream.js';
import type { GpuLlama } from '../model/gpu-llama.js';

// Replaying a context stream on the generator's compressed sequence: what `continueFrom` and a store hit's rest
// run. Apart from generator.ts so that the class stays one concept.

/** The model and sequence a replay runs on, with the sequence's decode compressor (null: never compresses). */
export interface ReplayTarget {
  readonly model: GpuLlama;
  readonly cache: PagedKvCache;
  readonly seqId: number;
  readonly decode: DecodeCompressor | null;
}

/**
 * `stream` (normalized) with its last segment, when a prefill, split at the last block boundary strictly inside
 * it (`start` tokens come before the stream): a store saves the state there, so a later prompt that shares the
 * block-aligned prefix but not the whole prompt (or the same prompt: a state covering every token leaves none to
 * forward) restores it. Nothing compresses inside a prefill, so the split leaves the same state.
 *
 * @example
 * ```ts
 * splitLastPrefill([{ kind: 'prefill', tokens: twentyTokens }], 0, 16); // prefill 16, prefill 4
 * ```
 */
export function splitLastPrefill(stream: readonly ContextSegment[], start: number, blockSize: number): ContextSegment[] {
  const last = stream[stream.length - 1];
  if (last === undefined || last.kind !== 'prefill') return [...stream];
  let before = start;
  for (const segment of stream.slice(0, -1)) if (segment.kind !== 'compress') before += segment.tokens.length;
  const end = before + last.tokens.length;
  const boundary = Math.floor((end - 1) / blockSize) * blockSize;
  if (boundary <= before) return [...stream];
  const cut = boundary - before;
  return [...stream.slice(0, -1), { kind: 'prefill', tokens: last.tokens.slice(0, cut) }, { kind: 'prefill', tokens: last.tokens.slice(cut) }];
}

/**
 * Appends `stream` to the target's sequence as it was first built: a prefill segment in one forward pass (nothing
 * compresses inside it), a decode segment one token at a time with the decode schedule before each, a compress
 * segment as an explicit compression to the schedule's target. Returns the logits after the last token forwarded
 * (null when the stream forwards none) and the compressions it ran, in order. `onSegmentEnd` gets the segments up
 * to each segment's end but the last (where a store saves).
 *
 * @example
 * ```ts
 * const { logits } = await replayStream(target, [{ kind: 'prefill', tokens: knowledge }, { kind: 'compress' }]);
 * ```
 */
export async function replayStream(
  target: ReplayTarget,
  stream: ContextStream,
  onSegmentEnd?: (segmentsUpTo: ContextStream, next: ContextSegment) => Promise<void>,
): Promise<{ logits: Float32Array | null; compressions: CompressionReport[] }> {
  const { model, seqId, decode } = target;
  let logits: Float32Array | null = null;
  const compressions: CompressionReport[] = [];
  // Not normalized: a caller may split a prefill to save the state at a block boundary inside it.
  const segments = stream;
  for (let index = 0; index < segments.length; index++) {
    const segment = segments[index] as ContextSegment;
    if (segment.kind === 'prefill') {
      logits = await model.forward(seqId, segment.tokens);
      decode?.prefilled(segment.tokens.length);
    } else if (segment.kind === 'decode') {
      for (const token of segment.tokens) {
        const report = decode ? await decode.beforeStep(seqId, 1) : null;
        if (report) compressions.push(report);
        logits = await model.forward(seqId, [token]);
      }
    } else {
      const report = decode ? await decode.compressNow(seqId) : null;
      if (report) compressions.push(report);
    }
    const next = segments[index + 1];
    if (onSegmentEnd && next !== undefined) await onSegmentEnd(segments.slice(0, index + 1), next);
  }
  return { logits, compressions };
}

/**
 * The part of `stream` after `prefix` (a normalized prefix of it, such as a stream link's `segmentsUpTo`: whole
 * segments and the first tokens of one).
 *
 * @throws InvalidArgumentError when `prefix` is not a prefix of `stream`.
 * @example
 * ```ts
 * streamRest([{ kind: 'prefill', tokens: [1, 2, 3] }], [{ kind: 'prefill', tokens: [1, 2] }]); // [{ kind: 'prefill', tokens: [3] }]
 * ```
 */
export function streamRest(stream: ContextStream, prefix: ContextStream): ContextSegment[] {
  const whole = normalizeStream(stream);
  const head = normalizeStream(prefix);
  const notPrefix = (): InvalidArgumentError => new InvalidArgumentError('prefix', 'is not a prefix of the stream (a store entry of another history)');
  for (let i = 0; i < head.length; i++) {
    const a = head[i] as ContextSegment;
    const b = whole[i];
    if (b === undefined || a.kind !== b.kind) throw notPrefix();
    if (a.kind === 'compress' || b.kind === 'compress') continue;
    const last = i === head.length - 1;
    if (a.tokens.length > b.tokens.length || (!last && a.tokens.length !== b.tokens.length)) throw notPrefix();
    if (a.tokens.some((token, j) => token !== b.tokens[j])) throw notPrefix();
    if (last && a.tokens.length < b.tokens.length) {
      return [{ kind: b.kind, tokens: b.tokens.slice(a.tokens.length) }, ...whole.slice(i + 1)];
    }
  }
  return whole.slice(head.length);
}

/** The resolved compression settings of a generation (what its decode schedule was built from). */
export interface ReplaySettings {
  readonly policy: string;
  readonly budgetMode: string;
  readonly budget: number;
  readonly bits: number;
  readonly schedule: DecodeSchedule | null;
}

/**
 * The store namespace settings of a generation: every setting that changes the state of its compressed cache
 * (src/store/keys.ts), null where one does not apply (policy 'full' keeps every token in f16).
 *
 * @example
 * ```ts
 * const namespace = { modelFingerprint, settings: cacheStateSettings(resolved, { fullFormat: 'f16' }), tenantSalt };
 * ```
 */
export function cacheStateSettings(resolved: ReplaySettings, extra: { readonly fullFormat: string }): CacheStateSettings {
  const schedule = resolved.schedule;
  if (schedule === null) {
    return { policy: 'none', budgetMode: null, budget: null, bits: 16, sinks: null, recent: null, window: null, decodeSchedule: null, extra };
  }
  const { compress } = schedule;
  return {
    policy: resolved.policy,
    budgetMode: resolved.budgetMode,
    budget: resolved.budget,
    bits: resolved.bits,
    sinks: schedule.sinks,
    recent: schedule.recent,
    window: schedule.window,
    decodeSchedule: {
      mode: schedule.mode,
      target: schedule.target,
      slack: schedule.slack,
      every: schedule.every,
      quantizeEvery: schedule.quantizeEvery,
      merge: compress.merge ?? 'none',
    },
    extra,
  };
}
