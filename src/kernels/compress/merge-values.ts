import mergeCamBody from '../../../shaders/merge_cam.wgsl';
import mergeCommonLibrary from '../../../shaders/merge_common.wgsl';
import mergeKeptKeysBody from '../../../shaders/merge_kept_keys.wgsl';
import mergeLinksBody from '../../../shaders/merge_links.wgsl';
import mergeTargetsBody from '../../../shaders/merge_targets.wgsl';
import mergeValuesBody from '../../../shaders/merge_values.wgsl';
import mergeWeightLibrary from '../../../shaders/merge_weight.wgsl';
import mergeWindowLibrary from '../../../shaders/merge_window.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from '../cache/cache-constants.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';

const PARAMS = new UniformLayout('MergeValuesParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'chunks', type: 'u32' },
  { name: 'link_first', type: 'u32' },
]);

// merge_links takes the values pass's parameters under its own struct name.
const LINKS_PARAMS = new UniformLayout('MergeLinksParams', PARAMS.fields);

const TARGETS_PARAMS = new UniformLayout('MergeTargetsParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'chunks', type: 'u32' },
  { name: 'keys_offset', type: 'u32' },
  { name: 'hash_offset', type: 'u32' },
]);

const KEPT_KEYS_PARAMS = new UniformLayout('MergeKeptKeysParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'chunks', type: 'u32' },
  { name: 'keys_offset', type: 'u32' },
  { name: 'hash_offset', type: 'u32' },
]);

const CAM_PARAMS = new UniformLayout('MergeCamParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'chunks', type: 'u32' },
]);

/**
 * Consecutive kept slots one thread of shaders/merge_cam.wgsl walks: it reads the three gaps before its run once
 * more, so longer runs read less twice and shorter ones spread a head over more threads.
 */
const CAM_RUN = 32;

/**
 * Octets (eight channels) of a head row one cam thread handles (1, 2 or 4): a token's weight, block-table entry and
 * share are computed once per thread. 2 measured 5–17% faster than 1 on SwiftShader; 4 no better than 2 (fewer
 * threads, more registers).
 */
const CAM_WIDTH = 2;

/**
 * Consecutive kept slots one thread of shaders/merge_kept_keys.wgsl walks, normalizing and hashing the keys of
 * those some evicted token may rank (within MERGE_WINDOW slots of one).
 */
const KEYS_RUN = 8;

/**
 * Octets of a kept slot's row one thread of shaders/merge_values.wgsl sums (1 or 2): its list link, weight and
 * block-table entry are read once per thread.
 */
const VALUES_WIDTH = 2;

/**
 * Consecutive kept slots one thread of shaders/merge_values.wgsl walks, summing the lists of those that some
 * evicted token targets: a compression that evicts few tokens pays for their slots and one trip per run.
 */
const VALUES_RUN = 32;

/**
 * Seed of the fixed sign flips of the nearest merge's key hash (shaders/merge_common.wgsl; keyHash in
 * src/compress/merge.ts): part of the rule, so a change changes which kept token a value folds into.
 */
export const MERGE_HASH_SEED = 0x6b43a9b5;

/**
 * Kept slots, nearest in the Hamming distance of their key hashes, that the nearest merge re-ranks by exact cosine
 * similarity for each evicted token (all of them when a head keeps no more). shaders/merge_targets.wgsl holds them in one
 * vec4, so this is 4.
 */
export const MERGE_CANDIDATES = 4;

/**
 * Kept slots around an evicted token (centred on its first kept slot after it) that the nearest merge ranks by
 * hash: part of the rule (src/compress/merge.ts mergeCandidates). Even.
 */
export const MERGE_WINDOW = 16;

/**
 * A head that keeps at least this many times as many tokens as it evicts ranks each evicted token's whole window by
 * exact cosine ({@link ranksWindowExactly}), without hashes. Part of the rule. Why 4: ranking by
 * hash reads about 3 key rows per kept slot a window holds (its norm, the normalized row, its hash) plus 5 per
 * evicted token (its hash, the MERGE_CANDIDATES re-ranked), the exact ranking MERGE_WINDOW per evicted token, so
 * exact reads fewer rows while evicted ≤ 3 · kept / 11 (and gets the window's true nearest). The decode schedule's
 * compressions (budget + 1 → budget − 16 at blocks of 16, src/compress/decode-schedule.ts) are such heads from a
 * budget of 84 on; the bench's `/step` rows (C → C − 16) at every context they time.
 */
export const MERGE_EXACT_KEPT_PER_EVICTED = 4;

/**
 * Whether a head of `tokens` tokens that keeps `kept` ranks each evicted token's whole {@link MERGE_WINDOW} by
 * exact cosine instead of re-ranking its hash candidates (src/compress/merge.ts mergeCandidates): when it keeps at
 * least {@link MERGE_EXACT_KEPT_PER_EVICTED} times what it evicts (then the exact ranking is the cheaper one too).
 * Such a head's nearest passes also run a thread per evicted token (shaders/merge_window.wgsl).
 *
 * @example
 * ```ts
 * ranksWindowExactly(1024, 1008); // true: one block evicted, as the bench's /step rows do
 * ranksWindowExactly(1024, 128);  // false: keep 1/8, ranked by hash
 * ```
 */
export function ranksWindowExactly(tokens: number, kept: number): boolean {
  return MERGE_EXACT_KEPT_PER_EVICTED * (tokens - kept) <= kept;
}

/**
 * Threads a merge pass takes, the most over the heads: `groups` per evicted token in a head that ranks its windows
 * exactly (it evicts few), else `groups` per run of `run` kept slots.
 */
function passThreads(heads: readonly MergeHeadJob[], run: number, groups: number): number {
  return Math.max(...heads.map((h) => (ranksWindowExactly(h.tokens, h.kept) ? h.tokens - h.kept : Math.ceil(h.kept / run)) * groups));
}

/**
 * The merge rules the kernel runs (src/compress/options.ts MergeMode; 'none' runs no kernel).
 *
 * @example
 * ```ts
 * kernel.encode(encoder, { ...run, mode: 'nearest' });
 * ```
 */
export type MergeKernelMode = 'nearest' | 'cam';

/** u32 words per head in the heads buffer: row, tokens, kept, out_base. */
export const MERGE_HEAD_WORDS = 4;

/**
 * One head to merge: its table row, its tokens before compression, its kept count, and the first slot of its kept
 * tokens in the merged buffer.
 *
 * @example
 * ```ts
 * const head: MergeHeadJob = { row: 3, tokens: 80, kept: 24, outBase: 48 };
 * ```
 */
export interface MergeHeadJob {
  readonly row: number;
  readonly tokens: number;
  readonly kept: number;
  readonly outBase: number;
}

/**
 * Packs heads into the u32 [heads][4] layout merge_values reads.
 *
 * @example
 * ```ts
 * const heads = createStorageBuffer(gpu, 'merge:heads', packMergeHeads(list));
 * ```
 */
export function packMergeHeads(heads: readonly MergeHeadJob[]): Uint32Array {
  const out = new Uint32Array(heads.length * MERGE_HEAD_WORDS);
  heads.forEach((h, i) => out.set([h.row, h.tokens, h.kept, h.outBase], i * MERGE_HEAD_WORDS));
  return out;
}

/**
 * Where things sit in the merged buffer for `keptTokens` kept tokens in all (f32 word offsets): their values
 * [keptTokens][headDim] (only the rows that something merges into are written, see {@link mergedMaskWords}); then
 * (nearest, shaders/merge_kept_keys.wgsl) per kept token its normalized key padded to vec4s, then its key hash as
 * two 16-bit halves.
 *
 * @example
 * ```ts
 * const layout = mergedLayout(total, headDim);
 * const merged = createStorageBuffer(gpu, 'merge:values', layout.words * 4);
 * ```
 */
export function mergedLayout(keptTokens: number, headDim: number): { readonly keysOffset: number; readonly hashOffset: number; readonly words: number } {
  // Keys start on a vec4 (merge_targets reads them as vec4s) and the total is whole vec4s.
  const keysOffset = 4 * Math.ceil((keptTokens * headDim) / 4);
  const hashOffset = keysOffset + keptTokens * 4 * Math.ceil(headDim / 4);
  return { keysOffset, hashOffset, words: 4 * Math.ceil((hashOffset + 2 * keptTokens) / 4) || 4 };
}

/**
 * u32 words of the merged-row mask for `keptTokens` kept tokens in all: bit k (word k / 32) is set where the merge
 * wrote merged row k. A kept token that no evicted token merges into keeps its own value, which compact_blocks then
 * reads from the pool, so a merge costs in proportion to the evicted tokens, not the kept ones. One word of slack:
 * compact_blocks reads the two words a job's bits may span.
 *
 * @example
 * ```ts
 * const mask = createStorageBuffer(gpu, 'merge:mask', mergedMaskWords(total) * 4); // zeroed before each merge
 * ```
 */
export function mergedMaskWords(keptTokens: number): number {
  return Math.ceil(keptTokens / 32) + 1;
}

/**
 * f32 words of the merged buffer for `keptTokens` kept tokens in all ({@link mergedLayout}).
 *
 * @example
 * ```ts
 * const merged = createStorageBuffer(gpu, 'merge:values', mergedWords(total, headDim) * 4);
 * ```
 */
export function mergedWords(keptTokens: number, headDim: number): number {
  return mergedLayout(keptTokens, headDim).words;
}

/**
 * One run of {@link MergeValuesKernel}.
 *
 * @example
 * ```ts
 * const run: MergeValuesRun = { cache, mode: 'nearest', heads, headJobs, numHeads, maxKept, keptTotal, stride, keptIndex, mass, targets, links, linkRows, merged };
 * ```
 */
export interface MergeValuesRun {
  readonly cache: PagedCacheBindings;
  readonly mode: MergeKernelMode;
  /** u32 [numHeads][4] (see {@link packMergeHeads}). */
  readonly heads: GPUBuffer;
  readonly numHeads: number;
  /** The most tokens any of the heads keeps (sizes the cam dispatch). */
  readonly maxKept: number;
  /**
   * What `heads` holds, on the CPU: sizes the nearest passes per head (a head that ranks its windows exactly takes
   * a thread per evicted token) and names the rows whose target words and list heads are zeroed first.
   */
  readonly headJobs: readonly MergeHeadJob[];
  /** Kept tokens over all heads: the merged buffer holds that many values first. */
  readonly keptTotal: number;
  /** Width of a kept-index / mass row (maxTokensPerHead). */
  readonly stride: number;
  /** u32 [row][stride]: kept logical indices, ascending. */
  readonly keptIndex: GPUBuffer;
  /**
   * f32 [row][stride]: the merge weight per token, or `{ sum, count }` to weigh by the mean attention per query,
   * sum / count (0 before any query).
   */
  readonly mass: GPUBuffer | { readonly sum: GPUBuffer; readonly count: GPUBuffer };
  /**
   * u32 [row][stride] scratch (nearest only): in the heads' rows each evicted token's word becomes its target slot + 1
   * and the kept tokens' 0.
   */
  readonly targets: GPUBuffer;
  /**
   * u32 [2][linkRows][stride] scratch (nearest only; the cam rule ignores it): each kept slot's list of the tokens
   * that merge into it (shaders/merge_links.wgsl).
   */
  readonly links: GPUBuffer;
  /** Table rows each half of `links` holds (every row a merged head may have). */
  readonly linkRows: number;
  /** No merged head has a quantized block: the kernels without the quantized reads run (SwiftShader pays for them). */
  readonly fullSources?: boolean;
  /** f32 [{@link mergedWords}]: what compact_blocks reads as the kept values. */
  readonly merged: GPUBuffer;
  /** u32 [{@link mergedMaskWords}], zeroed by the caller: the merge sets the bit of every row it writes. */
  readonly mergedMask: GPUBuffer;
}

/**
 * Folds each compacted head's evicted tokens into its kept values (MergeMode 'nearest' or 'cam'), on the GPU, so
 * that compact_blocks writes (and KIVI-quantizes) merged values with no readback. Nearest: four passes,
 * shaders/merge_kept_keys.wgsl (each kept key that an evicted token may rank read once: normalized, and its
 * SimHash), shaders/merge_targets.wgsl (per evicted token: the {@link MERGE_CANDIDATES} kept hashes nearest to its own
 * in Hamming distance, re-ranked by exact cosine), shaders/merge_links.wgsl (one thread per kept slot: the list of the
 * tokens that target it) and shaders/merge_values.wgsl (per slot with a list and 16 channels: the weighted sum over
 * its list, in registers); cam: one pass, shaders/merge_cam.wgsl (one thread per run of kept slots and 16 channels:
 * the gap sums of its evicted tokens, the last four in registers, added to the slots they reach). Only the slots
 * that something merges into get a merged row (and their bit, {@link mergedMaskWords}); every pass but merge_links
 * loops over the tokens or slots it has work for, so a compression that evicts a few tokens per head (the decode
 * schedule's) costs in proportion to those. Under statistics policies the kernels weigh by
 * the mean attention per query, Σp / count, computed where the weight is read (no pass of its own). f16 pools are
 * read eight channels a load (bound a second time as vec4<u32>). Hash bits as the reference computes them; sums in
 * the reference's order, so within f32 rounding of src/compress/merge.ts.
 *
 * @example
 * ```ts
 * const merge = new MergeValuesKernel(gpu, { full, quant });
 * merge.encode(encoder, run);
 * compact.encode(encoder, { cache, jobs, numJobs, indices: keptIndex, merged: run.merged });
 * ```
 */
export class MergeValuesKernel {
  private readonly targetsSpec: KernelSpec;
  private readonly keptKeysSpec: KernelSpec;
  private readonly linksSpec: KernelSpec;
  private static sources(spec: KernelSpec, full: boolean): KernelSpec {
    return { ...spec, constants: { ...spec.constants, FULL_SOURCES: { type: 'bool', value: full } } };
  }

  private readonly specs: { readonly values: (mean: boolean) => KernelSpec; readonly cam: (mean: boolean) => KernelSpec };
  private readonly headDim: number;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    shape: { full: BlockLayout; quant: BlockLayout | null; workgroupSize?: number },
    rule: { readonly weightFloor: number; readonly camSpan: number },
  ) {
    // shaders/merge_cam.wgsl keeps the gaps that reach a slot in four named registers.
    if (rule.camSpan !== 4) throw new InvalidArgumentError('camSpan', `the cam kernel adds the last 4 gaps; got ${rule.camSpan}`);
    this.headDim = shape.full.headDim;
    this.workgroupSize = shape.workgroupSize ?? 64;
    const headVecs = Math.ceil(this.headDim / 4);
    // What every kernel reading the cache through shaders/merge_common.wgsl needs.
    const common = (workgroupSize: number) => ({
      ...cacheConstants(shape.full, shape.quant),
      WORKGROUP_SIZE: { type: 'u32', value: workgroupSize },
      HEAD_VECS: { type: 'u32', value: headVecs },
      MERGE_HASH_SEED: { type: 'u32', value: MERGE_HASH_SEED },
      MERGE_EXACT_KEPT_PER_EVICTED: { type: 'u32', value: MERGE_EXACT_KEPT_PER_EVICTED },
    }) as const;
    const libraries = [kvReadLibrary, mergeCommonLibrary];
    this.targetsSpec = {
      name: 'merge_targets',
      body: mergeTargetsBody,
      libraries: [...libraries, mergeWindowLibrary],
      constants: {
        ...common(this.workgroupSize),
        MERGE_WINDOW: { type: 'u32', value: MERGE_WINDOW },
      },
      uniforms: [TARGETS_PARAMS],
    };
    this.linksSpec = {
      name: 'merge_links',
      body: mergeLinksBody,
      libraries: [mergeWindowLibrary],
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        MERGE_WINDOW: { type: 'u32', value: MERGE_WINDOW },
        MERGE_EXACT_KEPT_PER_EVICTED: { type: 'u32', value: MERGE_EXACT_KEPT_PER_EVICTED },
      },
      uniforms: [LINKS_PARAMS],
    };
    this.keptKeysSpec = {
      name: 'merge_kept_keys',
      body: mergeKeptKeysBody,
      libraries: [...libraries, mergeWindowLibrary],
      constants: { ...common(this.workgroupSize), MERGE_WINDOW: { type: 'u32', value: MERGE_WINDOW }, KEYS_RUN: { type: 'u32', value: KEYS_RUN } },
      uniforms: [KEPT_KEYS_PARAMS],
    };
    const floor = { MERGE_WEIGHT_FLOOR: { type: 'f32', value: rule.weightFloor } } as const;
    // The two kernels that weigh evicted tokens by their attention (shaders/merge_weight.wgsl).
    const weighted = [...libraries, mergeWeightLibrary];
    const mean = (on: boolean) => ({ MASS_MEAN: { type: 'bool', value: on } }) as const;
    this.specs = {
      values: (on) => ({ name: 'merge_values', body: mergeValuesBody, libraries: [...weighted, mergeWindowLibrary], constants: { ...common(this.workgroupSize), ...floor, ...mean(on), MERGE_WINDOW: { type: 'u32', value: MERGE_WINDOW }, VALUES_WIDTH: { type: 'u32', value: VALUES_WIDTH }, VALUES_RUN: { type: 'u32', value: VALUES_RUN } }, uniforms: [PARAMS] }),
      cam: (on) => ({
        name: 'merge_cam',
        body: mergeCamBody,
        libraries: [...weighted, mergeWindowLibrary],
        constants: { ...common(this.workgroupSize), ...floor, ...mean(on), MERGE_WINDOW: { type: 'u32', value: MERGE_WINDOW }, CAM_MERGE_SPAN: { type: 'u32', value: rule.camSpan }, CAM_RUN: { type: 'u32', value: CAM_RUN }, CAM_WIDTH: { type: 'u32', value: CAM_WIDTH } },
        uniforms: [CAM_PARAMS],
      }),
    };
  }

  /** Records the merge into one compute pass. */
  encode(encoder: GPUCommandEncoder, run: MergeValuesRun): void {
    if (!Number.isInteger(run.numHeads) || run.numHeads <= 0) {
      throw new InvalidArgumentError('numHeads', `must be a positive integer; got ${run.numHeads}`);
    }
    const headDim = this.headDim;
    if (run.merged.size < mergedWords(run.keptTotal, headDim) * 4) {
      throw new InvalidArgumentError('merged', `holds ${run.merged.size} B; ${mergedWords(run.keptTotal, headDim) * 4} B needed`);
    }
    if (run.mergedMask.size < mergedMaskWords(run.keptTotal) * 4) {
      throw new InvalidArgumentError('mergedMask', `holds ${run.mergedMask.size} B; ${mergedMaskWords(run.keptTotal) * 4} B needed`);
    }
    // Checked before the pass begins: a throw inside it would leave the caller's encoder with an open pass.
    const linkFirst = run.linkRows * run.stride;
    if (run.mode === 'nearest' && (!Number.isInteger(run.linkRows) || run.linkRows <= 0 || run.links.size < 2 * linkFirst * 4)) {
      throw new InvalidArgumentError('links', `must hold u32 [2][linkRows ${run.linkRows}][stride ${run.stride}] (${2 * linkFirst * 4} B); holds ${run.links.size} B`);
    }
    if (run.headJobs.length !== run.numHeads) {
      throw new InvalidArgumentError('headJobs', `must list the ${run.numHeads} heads; got ${run.headJobs.length}`);
    }
    if (run.mode === 'nearest' && run.headJobs.some(({ row }) => !Number.isInteger(row) || row < 0 || row >= run.linkRows)) {
      throw new InvalidArgumentError('headJobs', `rows must be below linkRows ${run.linkRows}; got ${run.headJobs.map((h) => h.row).join(', ')}`);
    }
    const meanMass = 'sum' in run.mass;
    // Without the mean the count binding repeats the mass (the kernel never reads it).
    const [mass, count] = 'sum' in run.mass ? [run.mass.sum, run.mass.count] : [run.mass, run.mass];
    for (const [name, buffer] of [
      ['heads', run.heads],
      ['keptIndex', run.keptIndex],
      ['mass', mass],
      ['count', count],
      ['targets', run.targets],
      ['links', run.links],
      ['merged', run.merged],
      ['mergedMask', run.mergedMask],
    ] as const) {
      requireUsage(buffer, GPUBufferUsage.STORAGE, `merge_values ${name}`);
    }
    const layout = mergedLayout(run.keptTotal, headDim);
    const table = { max_blocks: run.cache.maxBlocksPerHead, stride: run.stride, num_heads: run.numHeads };
    const pool = [run.cache.blockTable, run.cache.fullPool, run.cache.quantPool];
    const headOctets = Math.ceil(Math.ceil(headDim / 4) / 2);
    const full = run.fullSources ?? false;
    if (run.mode === 'nearest') {
      // Zeroed before the pass (a clear is an encoder command): kept tokens' targets, and the list heads that the
      // per-evicted-token list pass leaves unwritten where no token targets a slot.
      const rowBytes = run.stride * 4;
      for (const [first, count] of consecutiveRuns(run.headJobs.map((h) => h.row))) {
        encoder.clearBuffer(run.targets, first * rowBytes, count * rowBytes);
        encoder.clearBuffer(run.links, (linkFirst + first * run.stride) * 4, count * rowBytes);
      }
    }
    const pass = encoder.beginComputePass({ label: `merge_${run.mode}` });
    if (run.mode === 'cam') {
      // Per head: a thread per (run of kept slots, octet group), or per (evicted token, octet group) where it ranks
      // its windows exactly (few evicted tokens; shaders/merge_cam.wgsl).
      const chunks = Math.max(1, Math.ceil(passThreads(run.headJobs, CAM_RUN, Math.ceil(headOctets / CAM_WIDTH)) / this.workgroupSize));
      const uniforms = this.gpu.uniformBuffer('merge_cam:params', CAM_PARAMS.pack({ ...table, chunks }));
      const bindings = [uniforms, run.heads, run.keptIndex, mass, count, ...pool, run.cache.fullPool, run.merged, run.mergedMask];
      encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, MergeValuesKernel.sources(this.specs.cam(meanMass), full)), bindings, run.numHeads * chunks);
      pass.end();
      return;
    }
    // Normalized kept keys and their hashes once per head, then the targets pass ranks the hashes (no pass where every
    // head ranks its windows exactly: on SwiftShader even workgroups that return at once cost).
    const { keysOffset, hashOffset } = layout;
    if (run.headJobs.some((h) => !ranksWindowExactly(h.tokens, h.kept))) {
      const keptChunks = Math.max(1, Math.ceil(Math.ceil(run.maxKept / KEYS_RUN) / this.workgroupSize));
      const keysUniforms = this.gpu.uniformBuffer('merge_kept_keys:params', KEPT_KEYS_PARAMS.pack({ ...table, chunks: keptChunks, keys_offset: keysOffset, hash_offset: hashOffset }));
      encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, MergeValuesKernel.sources(this.keptKeysSpec, full)), [keysUniforms, run.heads, run.keptIndex, ...pool, run.merged, run.cache.fullPool], run.numHeads * keptChunks);
    }
    // A thread per evicted token.
    const chunks = Math.max(1, Math.ceil(Math.max(...run.headJobs.map((h) => h.tokens - h.kept)) / this.workgroupSize));
    const targetUniforms = this.gpu.uniformBuffer('merge_targets:params', TARGETS_PARAMS.pack({ ...table, chunks, keys_offset: keysOffset, hash_offset: hashOffset }));
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, MergeValuesKernel.sources(this.targetsSpec, full)), [targetUniforms, run.heads, run.keptIndex, ...pool, run.targets, run.merged, run.cache.fullPool], run.numHeads * chunks);
    // Each slot's list of the tokens that merge into it, then the sums over the lists.
    const linkChunks = Math.max(1, Math.ceil(passThreads(run.headJobs, 1, 1) / this.workgroupSize));
    const linkUniforms = this.gpu.uniformBuffer('merge_links:params', LINKS_PARAMS.pack({ ...table, chunks: linkChunks, link_first: linkFirst }));
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.linksSpec), [linkUniforms, run.heads, run.keptIndex, run.targets, run.links], run.numHeads * linkChunks);
    // Per head: a thread per (run of kept slots, octet group), or per (evicted token, octet group) where it ranks
    // its windows exactly (shaders/merge_values.wgsl).
    const valueChunks = Math.max(1, Math.ceil(passThreads(run.headJobs, VALUES_RUN, Math.ceil(headOctets / VALUES_WIDTH)) / this.workgroupSize));
    const uniforms = this.gpu.uniformBuffer('merge_values:params', PARAMS.pack({ ...table, chunks: valueChunks, link_first: linkFirst }));
    const bindings = [uniforms, run.heads, run.keptIndex, mass, ...pool, run.links, run.merged, run.cache.fullPool, count, run.mergedMask, run.targets];
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, MergeValuesKernel.sources(this.specs.values(meanMass), full)), bindings, run.numHeads * valueChunks);
    pass.end();
  }
}

/** Runs [first, count] of consecutive values in `rows` (sorted first): one clear per run. */
function consecutiveRuns(rows: readonly number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (const row of [...rows].sort((a, b) => a - b)) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === row) last[1]++;
    else runs.push([row, 1]);
  }
  return runs;
}
