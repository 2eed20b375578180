import { InvalidArgumentError } from '../errors.js';
import type { CacheMetadata } from '../cache/cache-metadata.js';
import { compactionBlocks } from '../cache/compaction-plan.js';
import { sequenceBytes } from '../cache/memory-report.js';
import { baselineF16Bytes, type Bits, bytesPerBlock, formatForBits, type QuantFormat } from '../format/layout.js';
import type { CompressOptions, CompressionReport } from './options.js';

/**
 * Options of `compressAuto`: everything of {@link CompressOptions} but the split between eviction and bits,
 * which it chooses.
 */
export type AutoCompressOptions = Omit<CompressOptions, 'bits' | 'budget' | 'ratio'>;

/** What `compressAuto` chose, and why. */
export interface AutoChoice {
  readonly bits: Bits;
  /** Average tokens kept per head (null: all). */
  readonly budget: number | null;
  readonly why: string;
}

/** What `compressAuto` did: the usual report and the split it chose. */
export interface AutoCompressionReport extends CompressionReport {
  readonly chosen: AutoChoice;
}

/** The options `compressAuto` compresses with for a choice (the recent window shrinks to fit a small budget). */
export function autoCompressOptions(choice: AutoChoice, options: AutoCompressOptions): CompressOptions {
  const sinks = options.sinks ?? 4;
  const recent = options.recent ?? 32;
  const recentFor = choice.budget === null ? recent : Math.min(recent, Math.max(0, choice.budget - sinks));
  return {
    ...options,
    bits: choice.bits,
    recent: recentFor,
    ...(choice.budget === null ? {} : { budget: choice.budget, window: Math.max(1, Math.min(options.window ?? 32, recentFor)) }),
  };
}

/**
 * The split between eviction and bits that reaches `targetRatio` (f16 baseline of all tokens / bytes held) at the
 * least loss. Preference, from least to most lossy: keep every token in int8; else int4 without eviction; else
 * int4 with the largest uniform budget that reaches the target, as long as it keeps at least a quarter of the
 * tokens; else int2 with the largest budget that reaches it. Bytes are predicted exactly from the block
 * arithmetic of the compaction plan. A sequence already at the target is left as it is (bits 16, no budget).
 * Only the bits the quantized pool can take are candidates (`quantBits` at creation, or the bits of the blocks it
 * already holds). The one chooser of both engines.
 *
 * @throws InvalidArgumentError when targetRatio < 1 or no split reaches it (the message gives the best reachable).
 * @example
 * ```ts
 * chooseAuto(cache.meta, seq, 8, {}, null); // e.g. { bits: 4, budget: 150, why: '4-bit storage alone reaches …' }
 * ```
 */
export function chooseAuto(meta: CacheMetadata, seqId: number, targetRatio: number, options: AutoCompressOptions, fixedBits: number | null): AutoChoice {
  if (!Number.isFinite(targetRatio) || targetRatio < 1) {
    throw new InvalidArgumentError('targetRatio', `must be a finite number ≥ 1; got ${targetRatio}`);
  }
  const length = meta.sequenceLength(seqId);
  if (length === 0) throw new InvalidArgumentError('seqId', `sequence ${seqId} holds no tokens`);
  const baseline = baselineF16Bytes(meta.shape, length);
  const sinks = options.sinks ?? 4;
  const recent = options.recent ?? 32;
  const { bytes: now } = sequenceBytes(meta, seqId);
  if (now > 0 && baseline / now >= targetRatio) {
    return { bits: 16, budget: null, why: `already at ${(baseline / now).toFixed(2)}× ≥ ${targetRatio}×: nothing to do` };
  }
  const held = fixedBits ?? (meta.quantLayout !== null && meta.poolUsage('quant').used > 0 ? meta.quantLayout.bits : null);
  const candidates = ([8, 4, 2] as const).filter((b) => held === null || b === held);
  const { layers, kvHeads } = meta.shape;
  const counts: number[] = [];
  for (let layer = 0; layer < layers; layer++) for (let head = 0; head < kvHeads; head++) counts.push(meta.tokenCount(seqId, layer, head));
  const maxCount = Math.max(0, ...counts);
  const ratioOf = (bits: 8 | 4 | 2, budget: number | null): number => {
    const residual = budget === null ? recent : Math.min(recent, Math.max(0, budget - sinks));
    const kept = counts.map((n) => (budget === null ? n : Math.min(n, Math.floor(budget))));
    const quantBlock = bytesPerBlock(meta.layoutFor(formatForBits(bits) as QuantFormat));
    const fullBlock = meta.bytesPerBlock('full');
    let bytes = 0;
    for (const head of compactionBlocks(meta, { seqId, kept, quantize: true, residual })) bytes += head.quantBlocks * quantBlock + head.fullBlocks * fullBlock;
    return bytes === 0 ? Infinity : baseline / bytes;
  };
  for (const bits of candidates) {
    const reached = ratioOf(bits, null);
    if (reached >= targetRatio) return { bits, budget: null, why: `${bits}-bit storage without eviction reaches ${reached.toFixed(2)}× ≥ ${targetRatio}×` };
  }
  const evicting = candidates.filter((b) => b !== 8 || candidates.length === 1);
  let best = 0;
  for (const bits of evicting) {
    // Largest budget whose predicted ratio reaches the target: bytes grow with the budget, so bisect.
    let lo = 1;
    let hi = maxCount;
    let found = 0;
    while (lo <= hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (ratioOf(bits, mid) >= targetRatio) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    best = Math.max(best, ratioOf(bits, 1));
    const last = bits === evicting[evicting.length - 1];
    if (found > 0 && (found * 4 >= length || last)) {
      return {
        bits,
        budget: found,
        why: `${bits}-bit storage alone reaches ${ratioOf(bits, null).toFixed(2)}×; keeping ${found} tokens per head (of up to ${maxCount}) reaches ${ratioOf(bits, found).toFixed(2)}× ≥ ${targetRatio}×`,
      };
    }
  }
  throw new InvalidArgumentError(
    'targetRatio',
    `${targetRatio}× is out of reach for ${length} tokens: at most about ${best.toFixed(2)}× (one token per head at int${evicting[evicting.length - 1] ?? 2})`,
  );
}
