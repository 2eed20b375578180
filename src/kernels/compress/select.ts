import thresholdBody from '../../../shaders/select_threshold.wgsl';
import compactBody from '../../../shaders/select_compact.wgsl';
import memberCountsBody from '../../../shaders/select_member_counts.wgsl';
import selectCommonLibrary from '../../../shaders/select_common.wgsl';
import selectBinSearchLibrary from '../../../shaders/select_bin_search.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { type PartsThresholdRun, SegmentPartsThreshold } from './select-parts.js';

const SELECT_PARAMS = new UniformLayout('SelectParams', [
  { name: 'num_segments', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'segmented', type: 'u32' },
  { name: 'use_exclusion', type: 'u32' },
  { name: 'candidate_capacity', type: 'u32' },
  { name: 'wide_from', type: 'u32' },
  { name: 'compact', type: 'u32' },
]);

const MEMBER_COUNT_PARAMS = new UniformLayout('MemberCountParams', [
  { name: 'num_members', type: 'u32' },
  { name: 'num_segments', type: 'u32' },
  { name: 'stride', type: 'u32' },
]);

const COMPACT_SELECT_PARAMS = new UniformLayout('CompactSelectParams', [
  { name: 'num_rows', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'row_base', type: 'u32' },
  { name: 'group_rows', type: 'u32' },
  { name: 'group_stride', type: 'u32' },
]);

/**
 * Which rows a run touches: index i (0 ≤ i < numRows) is row `base + ⌊i / groupRows⌋ · groupStride + i mod
 * groupRows`. One sequence's rows are `{ base: slot · kvHeads, groupRows: kvHeads, groupStride: seqSlots · kvHeads }`
 * with numRows = layers · kvHeads. Default: the identity (rows 0..numRows−1).
 */
export interface RowMap {
  readonly base: number;
  readonly groupRows: number;
  readonly groupStride: number;
}

/**
 * The uniforms of a row map (identity when absent), and the highest row it reaches.
 *
 * @example
 * ```ts
 * rowMapUniforms({ base: 4, groupRows: 2, groupStride: 8 }, 4);
 * // { row_base: 4, group_rows: 2, group_stride: 8, lastRow: 13 }
 * ```
 */
export function rowMapUniforms(map: RowMap | undefined, numRows: number): { row_base: number; group_rows: number; group_stride: number; lastRow: number } {
  const m = map ?? { base: 0, groupRows: numRows, groupStride: 0 };
  if (!Number.isInteger(m.groupRows) || m.groupRows <= 0) {
    throw new InvalidArgumentError('rowMap.groupRows', `must be a positive integer; got ${m.groupRows}`);
  }
  const lastRow = m.base + Math.floor((numRows - 1) / m.groupRows) * m.groupStride + ((numRows - 1) % m.groupRows);
  return { row_base: m.base, group_rows: m.groupRows, group_stride: m.groupStride, lastRow };
}

/**
 * The threshold key meaning "keep nothing" (no finite or infinite f32 maps to it).
 *
 * @example
 * ```ts
 * if (thresholds[2 * row] === NO_THRESHOLD_KEY) console.log('row keeps nothing');
 * ```
 */
export const NO_THRESHOLD_KEY = 0xffff_ffff;

/**
 * The order-preserving u32 key the selection kernels give an f32 score (as its raw bits): larger score, larger
 * key; -0 and +0 share a key, as they tie in {@link selectTopK}'s comparisons.
 *
 * @example
 * ```ts
 * scoreKey(0x7f800000) > scoreKey(0x3f800000); // +Inf above 1
 * ```
 */
export function scoreKey(bits: number): number {
  const b = bits >>> 0 === 0x8000_0000 ? 0 : bits >>> 0;
  return (b & 0x8000_0000) !== 0 ? ~b >>> 0 : (b | 0x8000_0000) >>> 0;
}

/**
 * Per-row top-k: every row is its own selection.
 *
 * @example
 * ```ts
 * select.encodeThresholds(encoder, { scores, lengths, k, numRows: 64, stride: 4096, thresholds });
 * ```
 */
export interface RowThresholdRun {
  /** f32 [row][stride] scores (higher = keep; +Inf = protected). */
  readonly scores: GPUBuffer;
  /** u32 [row]: tokens per row (the context length). */
  readonly lengths: GPUBuffer;
  /** u32 [row]: tokens to keep per row (clamped to the length). */
  readonly k: GPUBuffer;
  readonly numRows: number;
  /** Scores per row in the buffer (maxTokensPerHead). */
  readonly stride: number;
  /** u32 [numRows][2] output: {threshold key, keepEqual}. */
  readonly thresholds: GPUBuffer;
}

/**
 * Joint selections: each segment picks its k best tokens over the union of its member rows.
 *
 * @example
 * ```ts
 * select.encodeSegmentThresholds(encoder, { scores, stride: 4096, numSegments: 4, segments, members, thresholds, numMembers: 32 });
 * ```
 */
export interface SegmentThresholdRun extends PartsThresholdRun {
  /**
   * u32 [member][2] output {keys > T, keys == T} over all the member's tokens. Accumulated with atomics: the
   * kernel CLEARS it first (so pass the exact range). Absent = not computed.
   */
  readonly memberCounts?: GPUBuffer;
}

/**
 * Applying per-row thresholds.
 *
 * @example
 * ```ts
 * select.encodeCompact(encoder, { scores, lengths, thresholds, numRows: 64, stride: 4096, keptIndices, keptCounts });
 * ```
 */
export interface CompactSelectRun {
  readonly scores: GPUBuffer;
  readonly lengths: GPUBuffer;
  /** u32 [row][2] from {@link TopKSelectKernel.encodeThresholds}. */
  readonly thresholds: GPUBuffer;
  readonly numRows: number;
  readonly stride: number;
  /** u32 [row][stride] output: kept logical indices, ascending; entries past the count are left untouched. */
  readonly keptIndices: GPUBuffer;
  /** u32 [row] output. */
  readonly keptCounts: GPUBuffer;
  /** Rows to compact (thresholds are indexed by the map's index i); default rows 0..numRows−1. */
  readonly rowMap?: RowMap;
}

/**
 * A whole per-row top-k: thresholds then compaction.
 *
 * @example
 * ```ts
 * const run: TopKRun = { scores, lengths, k, numRows: 64, stride: 4096, thresholds, keptIndices, keptCounts };
 * select.encode(encoder, run);
 * ```
 */
export type TopKRun = RowThresholdRun & Pick<CompactSelectRun, 'keptIndices' | 'keptCounts'>;

/** Where a compaction writes: kept logical indices [row][stride] (ascending) and their count [row]. */
type KeptOutputs = Pick<CompactSelectRun, 'keptIndices' | 'keptCounts'>;

/**
 * Workgroup shapes and scratch of {@link TopKSelectKernel}.
 *
 * @example
 * ```ts
 * new TopKSelectKernel(gpu, { candidateCapacity: 0 }); // no candidate list: every digit reads the rows
 * ```
 */
export interface TopKSelectOptions {
  /** Compaction threads per workgroup (default 16). */
  readonly workgroupSize?: number;
  /** Tokens each compaction thread owns per chunk (default 64). */
  readonly itemsPerThread?: number;
  /** Radix-select threads per workgroup (default 4 on a software adapter, 16 otherwise). */
  readonly thresholdWorkgroupSize?: number;
  /**
   * Candidate keys per segment the threshold kernel's scratch list holds (the keys under the first digit's
   * prefix, read by the last digit instead of the rows); more and that segment reads its rows again. Default:
   * a quarter of a segment's tokens, at least 1024 (per-row: at most the stride, so rows up to 1024 always fit).
   */
  readonly candidateCapacity?: number;
  /**
   * Segments of at least this many tokens are radix-selected with three 11-bit digits, shorter ones with four
   * 8-bit digits (default {@link WIDE_DIGITS_FROM}). Same result either way.
   */
  readonly wideDigitsFrom?: number;
  /**
   * {@link TopKSelectKernel.encode} compacts inside the threshold kernel (the workgroup that found a row's
   * threshold writes its kept indices; default true) instead of running `select_compact` after it. Same result.
   */
  readonly fuseCompaction?: boolean;
  /**
   * Joint selections: a segment of up to stride × members ÷ segments tokens is spread over ⌈that ÷ partTokens⌉
   * workgroups (`select_threshold_parts`) when that is at least 2 and there are at most {@link PARTS_MAX_SEGMENTS}
   * segments (default {@link PART_TOKENS} on hardware, 0 = never on a software adapter, where it measured no
   * faster). Set explicitly, the segment count is not checked. Same result.
   */
  readonly partTokens?: number;
  /**
   * Each radix-select thread reads one contiguous run of a row (default on a software adapter: the fused
   * compaction then counts from the candidates, one read fewer) instead of every thread-count-th token (default
   * on hardware: coalesced loads). Same result.
   */
  readonly contiguousRuns?: boolean;
}

/** Tokens per workgroup of a joint selection spread over several (see {@link TopKSelectOptions.partTokens}). */
export const PART_TOKENS = 4096;
/** Joint selections over more segments than this already have a workgroup per segment to spare. */
export const PARTS_MAX_SEGMENTS = 8;
/** At most this many workgroups per segment. */
const MAX_PARTS = 256;

/**
 * Segment length from which the threshold kernel uses 11-bit digits. Measured on SwiftShader (32 rows): at 1K
 * tokens clearing and summing 2048 bins per digit costs more than the keys; from 4K the saved full read wins.
 */
export const WIDE_DIGITS_FROM = 2048;

/** Words of one segment's radix histograms in the threshold kernel's scratch (2048 + 2048 + 1024 bins). */
const HISTOGRAM_WORDS = 5120;
/** Candidate lists no smaller than this (tokens per segment): short rows always fit. */
const MIN_CANDIDATES = 1024;
/** Default candidate list: this fraction of a segment's tokens (the 11-bit first digit leaves far fewer). */
const CANDIDATE_DIVISOR = 4;

function checkCount(field: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
  }
}

function checkSize(name: string, buffer: GPUBuffer, bytes: number): void {
  requireUsage(buffer, GPUBufferUsage.STORAGE, name);
  if (buffer.size < bytes) throw new InvalidArgumentError(name, `"${buffer.label}" holds ${buffer.size} B; ${bytes} B needed`);
}

/**
 * Top-k selection on the GPU with {@link selectTopK}'s exact result (score descending, ties by lower index):
 * `select_threshold` radix-selects each row's k-th largest score as an order-preserving u32 key plus how many
 * keys equal to it are kept, and in {@link TopKSelectKernel.encode} the same workgroup then writes the kept logical
 * indices in ascending order (`select_compact` does that alone in {@link TopKSelectKernel.encodeCompact}). Scores
 * never leave the GPU. The same threshold kernel also selects jointly over several rows (budget allocation, see
 * `allocateBudgetsGpu`); a few long segments are spread over several workgroups each (`select_threshold_parts`).
 * It keeps scratch buffers (per segment: 20 KiB of histograms plus its candidate list, by default a quarter of the
 * segment's tokens), grown as larger runs come and freed by {@link TopKSelectKernel.destroy}.
 *
 * @example
 * ```ts
 * const select = new TopKSelectKernel(gpu);
 * const encoder = gpu.device.createCommandEncoder();
 * select.encode(encoder, { scores, lengths, k, numRows, stride, thresholds, keptIndices, keptCounts });
 * gpu.submit([encoder.finish()]);
 * ```
 */
export class TopKSelectKernel {
  readonly thresholdSpec: KernelSpec;
  readonly compactSpec: KernelSpec;
  readonly memberCountSpec: KernelSpec;

  private readonly thresholdSize: number;
  private readonly candidateTokens: number | undefined;
  private readonly wideFrom: number;
  private readonly fuse: boolean;
  private readonly partTokens: number;
  private readonly partsForced: boolean;
  private readonly parts: SegmentPartsThreshold;

  constructor(
    private readonly gpu: GpuContext,
    options: TopKSelectOptions = {},
  ) {
    // Few threads, many items each: a software adapter pays per barrier and per group of lanes. Measured on
    // SwiftShader (bench --only top-k, 32 rows, 1K–16K): 16 threads × 64 items for the compaction and 16 threads
    // for the radix histogram took 0.45–0.8× the time of 64 × 16 and 64 (fewer threads, fewer lane groups to
    // switch at every barrier; 8 threads was slower again at 16K). The radix select since its 11-bit digits and
    // candidate list: 4 threads (one lane group, so barriers switch nothing) took 0.75–0.85× the time of 16 on
    // SwiftShader at 1K–16K, so a software adapter gets 4; hardware keeps 16 (not measured there).
    const workgroupSize = options.workgroupSize ?? 16;
    const items = options.itemsPerThread ?? 64;
    const thresholdSize = options.thresholdWorkgroupSize ?? (gpu.adapter.isFallbackAdapter ? 4 : 16);
    for (const [field, size] of [['workgroupSize', workgroupSize], ['thresholdWorkgroupSize', thresholdSize]] as const) {
      if (!Number.isInteger(size) || size <= 0 || size > gpu.limits.maxComputeInvocationsPerWorkgroup) {
        throw new InvalidArgumentError(field, `must be a positive integer ≤ the device limit; got ${size}`);
      }
    }
    checkCount('itemsPerThread', items);
    if (options.candidateCapacity !== undefined && (!Number.isInteger(options.candidateCapacity) || options.candidateCapacity < 0)) {
      throw new InvalidArgumentError('candidateCapacity', `must be a non-negative integer; got ${options.candidateCapacity}`);
    }
    this.thresholdSize = thresholdSize;
    this.candidateTokens = options.candidateCapacity;
    this.wideFrom = options.wideDigitsFrom ?? WIDE_DIGITS_FROM;
    this.fuse = options.fuseCompaction ?? true;
    // On SwiftShader (2 cores) one segment of 32 × 1K or 32 × 4K tokens took 1.05–1.15x the time of one workgroup
    // spread over 2 workgroups, 1.1–1.5x over 8 to 32 (four dispatches instead of one, the parts' histograms
    // summed); a GPU with dozens of cores idles all but one on a single segment's workgroup (not measured here).
    this.partTokens = options.partTokens ?? (gpu.adapter.isFallbackAdapter ? 0 : PART_TOKENS);
    this.partsForced = options.partTokens !== undefined;
    if (!Number.isInteger(this.partTokens) || this.partTokens < 0) {
      throw new InvalidArgumentError('partTokens', `must be a non-negative integer; got ${this.partTokens}`);
    }
    this.parts = new SegmentPartsThreshold(gpu, thresholdSize);
    if (!Number.isInteger(this.wideFrom) || this.wideFrom < 0 || this.wideFrom > 0xffff_ffff) {
      throw new InvalidArgumentError('wideDigitsFrom', `must be a u32; got ${this.wideFrom}`);
    }
    // The radix histogram has up to 2048 bins, shared by the threshold kernel's threads.
    this.thresholdSpec = {
      name: 'select_threshold',
      body: thresholdBody,
      libraries: [selectCommonLibrary, selectBinSearchLibrary],
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: thresholdSize },
        CONTIGUOUS_RUNS: { type: 'u32', value: (options.contiguousRuns ?? gpu.adapter.isFallbackAdapter) ? 1 : 0 },
      },
      uniforms: [SELECT_PARAMS],
    };
    this.memberCountSpec = {
      name: 'select_member_counts',
      body: memberCountsBody,
      libraries: [selectCommonLibrary],
      constants: { WORKGROUP_SIZE: { type: 'u32', value: thresholdSize } },
      uniforms: [MEMBER_COUNT_PARAMS],
    };
    this.compactSpec = {
      name: 'select_compact',
      body: compactBody,
      libraries: [selectCommonLibrary],
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: workgroupSize },
        ITEMS: { type: 'u32', value: items },
      },
      uniforms: [COMPACT_SELECT_PARAMS],
    };
  }

  /** Records per-row thresholds: `thresholds[row] = {key, keepEqual}` for the row's top k[row]. */
  encodeThresholds(encoder: GPUCommandEncoder, run: RowThresholdRun): void {
    this.encodeRowThresholds(encoder, run, undefined);
  }

  /** Per-row thresholds, and with `kept` the compaction too, in the same dispatch. */
  private encodeRowThresholds(encoder: GPUCommandEncoder, run: RowThresholdRun, kept: KeptOutputs | undefined): void {
    checkCount('numRows', run.numRows);
    checkCount('stride', run.stride);
    checkSize('scores', run.scores, run.numRows * run.stride * 4);
    checkSize('lengths', run.lengths, run.numRows * 4);
    checkSize('k', run.k, run.numRows * 4);
    checkSize('thresholds', run.thresholds, run.numRows * 8);
    const fit = this.candidateTokens ?? Math.min(run.stride, Math.max(MIN_CANDIDATES, Math.ceil(run.stride / CANDIDATE_DIVISOR)));
    const capacity = this.candidatesPerThread(fit, run.numRows);
    const uniforms = this.gpu.uniformBuffer(
      'select_threshold:params',
      SELECT_PARAMS.pack({
        num_segments: run.numRows,
        stride: run.stride,
        segmented: 0,
        use_exclusion: 0,
        candidate_capacity: capacity,
        wide_from: this.wideFrom,
        compact: kept ? 1 : 0,
      }),
    );
    if (kept) {
      checkSize('keptIndices', kept.keptIndices, run.numRows * run.stride * 4);
      checkSize('keptCounts', kept.keptCounts, run.numRows * 4);
    }
    // Unused bindings still need a buffer: the lengths stand in for members and exclusions (never read with
    // these flags).
    this.dispatchThresholds(encoder, uniforms, [run.scores, run.lengths, run.k, run.lengths, run.lengths, run.thresholds], run.numRows, kept);
  }

  /** Records joint thresholds over segments of member rows (and, optionally, per-member counts). */
  encodeSegmentThresholds(encoder: GPUCommandEncoder, run: SegmentThresholdRun): void {
    checkCount('numSegments', run.numSegments);
    checkCount('numMembers', run.numMembers);
    checkCount('stride', run.stride);
    checkSize('segments', run.segments, run.numSegments * 12);
    checkSize('members', run.members, run.numMembers * 8);
    checkSize('thresholds', run.thresholds, run.numSegments * 8);
    if (run.exclusions) checkSize('exclusions', run.exclusions, run.numMembers * 8);
    if (run.memberCounts) {
      checkSize('memberCounts', run.memberCounts, run.numMembers * 8);
      encoder.clearBuffer(run.memberCounts, 0, run.numMembers * 8);
    }
    const bound = Math.ceil((run.stride * run.numMembers) / run.numSegments);
    const listTokens = this.candidateTokens ?? Math.max(MIN_CANDIDATES, Math.ceil(bound / CANDIDATE_DIVISOR));
    const parts = this.partTokens === 0 ? 1 : Math.min(MAX_PARTS, Math.ceil(bound / this.partTokens));
    if (parts >= 2 && (this.partsForced || run.numSegments <= PARTS_MAX_SEGMENTS)) {
      this.parts.encode(encoder, run, parts, listTokens);
    } else {
      this.encodeOneWorkgroupPerSegment(encoder, run, listTokens);
    }
    if (run.memberCounts) {
      // One workgroup per member: a joint budget over every head is one segment.
      const countUniforms = this.gpu.uniformBuffer(
        'select_member_counts:params',
        MEMBER_COUNT_PARAMS.pack({ num_members: run.numMembers, num_segments: run.numSegments, stride: run.stride }),
      );
      const pass = encoder.beginComputePass({ label: 'select_member_counts' });
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.memberCountSpec),
        [countUniforms, run.scores, run.segments, run.members, run.thresholds, run.memberCounts],
        run.numMembers,
      );
      pass.end();
    }
  }

  private encodeOneWorkgroupPerSegment(encoder: GPUCommandEncoder, run: SegmentThresholdRun, listTokens: number): void {
    const capacity = this.candidatesPerThread(listTokens, run.numSegments);
    const uniforms = this.gpu.uniformBuffer(
      'select_threshold:params',
      SELECT_PARAMS.pack({
        num_segments: run.numSegments,
        stride: run.stride,
        segmented: 1,
        use_exclusion: run.exclusions ? 1 : 0,
        candidate_capacity: capacity,
        wide_from: this.wideFrom,
        compact: 0,
      }),
    );
    this.dispatchThresholds(
      encoder,
      uniforms,
      [run.scores, run.members, run.segments, run.members, run.exclusions ?? run.members, run.thresholds],
      run.numSegments,
    );
  }

  /** Records the compaction of kept indices from per-row thresholds. */
  encodeCompact(encoder: GPUCommandEncoder, run: CompactSelectRun): void {
    checkCount('numRows', run.numRows);
    checkCount('stride', run.stride);
    const { lastRow, ...map } = rowMapUniforms(run.rowMap, run.numRows);
    const rows = lastRow + 1;
    checkSize('scores', run.scores, rows * run.stride * 4);
    checkSize('lengths', run.lengths, rows * 4);
    checkSize('thresholds', run.thresholds, run.numRows * 8);
    checkSize('keptIndices', run.keptIndices, rows * run.stride * 4);
    checkSize('keptCounts', run.keptCounts, rows * 4);
    const uniforms = this.gpu.uniformBuffer(
      'select_compact:params',
      COMPACT_SELECT_PARAMS.pack({ num_rows: run.numRows, stride: run.stride, ...map }),
    );
    const pass = encoder.beginComputePass({ label: 'select_compact' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.compactSpec),
      [uniforms, run.scores, run.lengths, run.thresholds, run.keptIndices, run.keptCounts],
      run.numRows,
    );
    pass.end();
  }

  /** Records a whole per-row top-k (thresholds, then compaction). */
  encode(encoder: GPUCommandEncoder, run: TopKRun): void {
    if (this.fuse) {
      this.encodeRowThresholds(encoder, run, run);
      return;
    }
    this.encodeThresholds(encoder, run);
    this.encodeCompact(encoder, run);
  }

  private candidateBuffer: GPUBuffer | undefined;
  /** Outgrown candidate buffers: an encoder not yet submitted may still use them, so they go in destroy(). */
  private retired: GPUBuffer[] = [];

  /**
   * Candidates per thread for `tokens` per segment, shrunk to what one binding may hold, with the scratch list
   * grown to match (doubling, so growth is rare).
   */
  private candidatesPerThread(tokens: number, segments: number): number {
    const threads = this.thresholdSize;
    const limit = Math.min(this.gpu.limits.maxStorageBufferBindingSize, this.gpu.limits.maxBufferSize);
    const fits = Math.floor((Math.floor(limit / (segments * 4)) - HISTOGRAM_WORDS) / threads);
    if (fits < 0) {
      throw new InvalidArgumentError('numSegments', `${segments} segments' histograms (${HISTOGRAM_WORDS * 4} B each) exceed one storage binding; select fewer at a time`);
    }
    const perThread = Math.min(Math.ceil(tokens / threads), fits);
    const bytes = segments * (HISTOGRAM_WORDS + threads * perThread) * 4;
    if (!this.candidateBuffer || this.candidateBuffer.size < bytes) {
      if (this.candidateBuffer) this.retired.push(this.candidateBuffer);
      const size = Math.min(Math.floor(limit / 4) * 4, Math.max(bytes, 2 * (this.candidateBuffer?.size ?? 0)));
      this.candidateBuffer = this.gpu.device.createBuffer({
        label: 'select_threshold:scratch',
        size,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
      });
    }
    return perThread;
  }

  private dispatchThresholds(
    encoder: GPUCommandEncoder,
    uniforms: GPUBuffer,
    buffers: readonly GPUBuffer[],
    workgroups: number,
    kept?: KeptOutputs,
  ): void {
    const [scores, lengths, ks, members, exclusions, thresholds] = buffers;
    if (!scores || !lengths || !ks || !members || !exclusions || !thresholds) {
      throw new InvalidArgumentError('buffers', 'select_threshold needs six buffers');
    }
    const scratch = this.candidates();
    encoder.clearBuffer(scratch, 0, workgroups * HISTOGRAM_WORDS * 4);
    const pass = encoder.beginComputePass({ label: 'select_threshold' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.thresholdSpec),
      [uniforms, scores, lengths, ks, members, exclusions, thresholds, scratch, kept?.keptIndices ?? this.unused()[0], kept?.keptCounts ?? this.unused()[1]],
      workgroups,
    );
    pass.end();
  }

  private candidates(): GPUBuffer {
    if (!this.candidateBuffer) throw new InvalidArgumentError('candidates', 'the candidate list is sized before each dispatch');
    return this.candidateBuffer;
  }

  private unusedPair: readonly [GPUBuffer, GPUBuffer] | undefined;
  /** Stand in for the kept-index outputs when the threshold kernel does not compact: two, as writable bindings may not alias. */
  private unused(): readonly [GPUBuffer, GPUBuffer] {
    const make = (): GPUBuffer => this.gpu.device.createBuffer({ label: 'select_threshold:unused', size: 16, usage: GPUBufferUsage.STORAGE });
    this.unusedPair ??= [make(), make()];
    return this.unusedPair;
  }

  /** Releases the kernel's scratch buffers. */
  destroy(): void {
    this.parts.destroy();
    for (const buffer of this.unusedPair ?? []) buffer.destroy();
    this.unusedPair = undefined;
    this.candidateBuffer?.destroy();
    this.candidateBuffer = undefined;
    for (const buffer of this.retired) buffer.destroy();
    this.retired = [];
  }
}
