import compactBody from '../../../shaders/compact_blocks.wgsl';
import kQuadLibrary from '../../../shaders/compact_k_quad.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import { compactBindings, compactUnrolled, quantizesByItem, quantizesByQuad } from './compact-unrolled.js';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from '../cache/cache-constants.js';
import { slotStateWords } from './merge-slots.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';

const COMPACT_BLOCKS_PARAMS = new UniformLayout('CompactBlocksParams', [
  { name: 'num_jobs', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
]);

/**
 * `indexBase` value meaning "source token i is logical index identityStart + i" (no index list).
 *
 * @example
 * ```ts
 * packCompactJobs([{ row: 0, destEntry: 7, count: 16, indexBase: IDENTITY_INDEX_BASE, identityStart: 32 }]);
 * ```
 */
export const IDENTITY_INDEX_BASE = 0xffff_ffff;

/**
 * u32 words per job in the jobs buffer.
 *
 * @example
 * ```ts
 * const jobs = createStorageBuffer(gpu, 'jobs', numJobs * COMPACT_JOB_WORDS * 4);
 * ```
 */
export const COMPACT_JOB_WORDS = 6;

/**
 * One destination block to build. Source token i is logical index `indices[indexBase + i]` of `row` in the
 * current block table, or `identityStart + i` when `indexBase` is {@link IDENTITY_INDEX_BASE}.
 *
 * @example
 * ```ts
 * const job: CompactJob = { row: 3, destEntry: encodeBlockRef('quant', 12), count: 16, indexBase: 0, identityStart: 0 };
 * ```
 */
export interface CompactJob {
  /** `(layer × seqSlots + slot) × kvHeads + kvHead`. */
  readonly row: number;
  /** Destination block-table entry (`encodeBlockRef`): its pool decides the format written. A fresh block. */
  readonly destEntry: number;
  /** Tokens to place, 1..blockSize; the rest of the block is zeroed. */
  readonly count: number;
  readonly indexBase: number;
  readonly identityStart: number;
  /**
   * Token i's value is merged value `valueBase + i` of the run's `merged` buffer (MergeValuesKernel's output)
   * instead of its own; absent or {@link IDENTITY_INDEX_BASE}: its own value.
   */
  readonly valueBase?: number;
}

/**
 * Packs jobs into the u32 [numJobs][6] layout `compact_blocks` reads.
 *
 * @example
 * ```ts
 * const jobs = createStorageBuffer(gpu, 'jobs', packCompactJobs(list));
 * ```
 */
export function packCompactJobs(jobs: readonly CompactJob[]): Uint32Array {
  const out = new Uint32Array(jobs.length * COMPACT_JOB_WORDS);
  jobs.forEach((job, i) => {
    out.set([job.row, job.destEntry, job.count, job.indexBase, job.identityStart, job.valueBase ?? IDENTITY_INDEX_BASE], i * COMPACT_JOB_WORDS);
  });
  return out;
}

/**
 * One run of block compaction.
 *
 * @example
 * ```ts
 * const run: CompactBlocksRun = { cache: cache.bindings, jobs, numJobs, indices: keptIndices };
 * ```
 */
export interface CompactBlocksRun {
  /** The cache; both pools must be bindable read_write (they are storage buffers). */
  readonly cache: PagedCacheBindings;
  /** u32 [numJobs][6] (see {@link packCompactJobs}). */
  readonly jobs: GPUBuffer;
  readonly numJobs: number;
  /** u32 logical indices referenced by the jobs (any 4-byte buffer when every job is an identity job). */
  readonly indices: GPUBuffer;
  /**
   * The merged values the jobs' `valueBase` point into (MergeValuesKernel's buffer, f32 rows [slot][head_dim]) and
   * its mask (u32 words, bit k set where row k was written: mergedMaskWords in merge-values.ts): a slot's row
   * replaces the kept token's value only where its bit is set. Needed only when a job has a `valueBase`; without it
   * none may, and the kernel runs a variant that never reads merged values. Where {@link
   * CompactBlocksKernel.mergedRowsPass}, the jobs are compacted unmerged and a second dispatch rewrites the V of
   * the merged tokens alone (its time is that of the merged rows, not of every V value).
   */
  readonly merged?: { readonly buffer: GPUBuffer; readonly mask: GPUBuffer };
  /**
   * `'full'` promises that every kept token of every job lives in a full-pool block (quantizing blocks that were
   * never quantized): the kernel then runs a variant without the quantized-source read, which a software adapter
   * would otherwise pay for on every value (it runs both sides of a branch). Default `'any'`.
   */
  readonly sources?: 'any' | 'full';
  /**
   * `'quant'` promises that every job's destination is a quantized block (a cache with a quantized pool): the
   * kernel then runs a variant that binds the full pool read-only, twice (as u32 words and as vec4 rows), and
   * reads whole rows with vec4 loads; a full destination in such a run is left unwritten. Default `'any'`.
   */
  readonly destinations?: 'any' | 'quant';
  /**
   * Merge 'slots': `indices` may hold {@link SLOT_SOURCE_FLAG} | r, slot token r of the slot state bound as
   * `merged` (MergeSlotsKernel's layout with `slots` slots per state head; src/compress/gpu-slots.ts).
   */
  readonly slotSources?: { readonly slots: number; readonly state: GPUBuffer };
}

/** Kept-index bit marking a merge-slot source (see {@link CompactBlocksRun.slotSources}). */
export const SLOT_SOURCE_FLAG = 0x80000000;

/** Workgroup size on a software (fallback) adapter; see the constructor. */
const SOFTWARE_WORKGROUP_SIZE = 4;

/** What stands in for shaders/compact_k_quad.wgsl where the kernel does not use it (QUAD_K_ITEMS false). */
const NO_QUAD_K = 'fn quad_lane(lid: u32) -> u32 { return lid & 3u; }\nfn quantize_k_quad(base: u32, group: u32, c0: u32, l: u32) {}';

/**
 * Builds destination blocks from lists of source tokens: reads K/V/positions of any source format (the shader's
 * kept_token / kept_quad / kept_position) and writes each destination in its pool's format — f32/f16
 * bit-exactly, or KIVI int8/int4/int2 as `encodeBlock` would from the decoded source values (codes within ±1
 * where WGSL's division lands across a rounding boundary). One workgroup per destination block; no atomics,
 * no barriers.
 *
 * Destinations must be fresh blocks, never a block any job reads.
 *
 * @example
 * ```ts
 * const compact = new CompactBlocksKernel(gpu, { full, quant });
 * compact.encode(encoder, { cache, jobs, numJobs, indices: keptIndices });
 * ```
 */
export class CompactBlocksKernel {
  /** The kernel for any sources and merged values; {@link encode} may pick a narrower variant of it. */
  readonly spec: KernelSpec;
  private readonly variants = new Map<string, KernelSpec>();
  private readonly workgroupSize: number;
  /** Whether K items are shared by the 4 lanes of a quad (shaders/compact_k_quad.wgsl). */
  readonly quadKItems: boolean;
  /** Bound as `merged` when a run merges nothing (a binding must be bound). */
  private placeholder: GPUBuffer | null = null;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { full: BlockLayout; quant: BlockLayout | null; workgroupSize?: number; quadKItems?: boolean },
  ) {
    if (shape.quant && (shape.quant.headDim !== shape.full.headDim || shape.quant.blockSize !== shape.full.blockSize)) {
      throw new InvalidArgumentError('quant', 'the two pools must share head_dim and block size');
    }
    // A software adapter (SwiftShader) pays a fixed cost per group of lanes, whatever the lanes do, because it
    // runs every branch: bench --only quantize took about 1/3 of the time at 4 threads of 64 (one lane group),
    // each thread doing more items. Real GPUs want many threads.
    this.workgroupSize = shape.workgroupSize ?? (gpu.adapter.isFallbackAdapter ? SOFTWARE_WORKGROUP_SIZE : 64);
    const size = this.workgroupSize;
    if (!Number.isInteger(size) || size <= 0 || size > gpu.limits.maxComputeInvocationsPerWorkgroup) {
      throw new InvalidArgumentError('workgroupSize', `must be a positive integer ≤ the device limit; got ${size}`);
    }
    // Quad K items (each K value read once, the ranges met through quad swaps) need subgroups, a workgroup that
    // is one quad, and G 16 at a head_dim of whole octets. Chosen by default only on a fallback adapter, where a
    // workgroup of 4 is one 4-lane subgroup and where it was measured (15–20% less time, bench --only quantize).
    const quadPossible = gpu.has('subgroups') && size === 4 && shape.quant !== null && quantizesByQuad(shape.quant);
    if (shape.quadKItems && !quadPossible) {
      throw new InvalidArgumentError('quadKItems', 'needs the subgroups feature, workgroupSize 4, group size 16 and head_dim a multiple of 8');
    }
    this.quadKItems = shape.quadKItems ?? (quadPossible && gpu.adapter.isFallbackAdapter);
    this.spec = this.variant('any', 'inline', 0, false);
    // One token's V can be rewritten alone where its words are its own: a full row of even head_dim, a whole-word
    // V item.
    this.mergedRowsPass = shape.full.headDim % 2 === 0 && (shape.quant === null || quantizesByItem(shape.quant));
  }

  /**
   * Whether merged values are written by a second dispatch of the jobs (the kernel's MERGED_ROWS variant) after an
   * unmerged compaction, instead of inside it.
   */
  readonly mergedRowsPass: boolean;

  /** `merged`: none; read inside the compaction ('inline'); or the MERGED_ROWS pass alone ('rows'). */
  private variant(sources: 'any' | 'full', merged: 'none' | 'inline' | 'rows', slots: number, quantDestinations: boolean): KernelSpec {
    const key = `${sources}/${merged}/${slots}/${quantDestinations}`;
    let spec = this.variants.get(key);
    if (!spec) {
      spec = {
        name: 'compact_blocks',
        body: compactBody,
        libraries: [kvReadLibrary, compactBindings(quantDestinations), compactUnrolled(this.shape.quant), this.quadKItems ? kQuadLibrary : NO_QUAD_K],
        ...(this.quadKItems ? { enables: ['subgroups'] } : {}),
        constants: {
          ...cacheConstants(this.shape.full, this.shape.quant),
          WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
          FULL_SOURCES: { type: 'bool', value: sources === 'full' },
          QUANT_DESTINATIONS: { type: 'bool', value: quantDestinations },
          QUAD_K_ITEMS: { type: 'bool', value: this.quadKItems },
          MERGED_VALUES: { type: 'bool', value: merged === 'inline' },
          MERGED_ROWS: { type: 'bool', value: merged === 'rows' },
          SLOT_SOURCES: { type: 'bool', value: slots > 0 },
          MERGE_SLOTS: { type: 'u32', value: Math.max(slots, 1) },
          SLOT_STATE_WORDS: { type: 'u32', value: slotStateWords(Math.max(slots, 1), this.shape.full.headDim) },
        },
        uniforms: [COMPACT_BLOCKS_PARAMS],
      };
      this.variants.set(key, spec);
    }
    return spec;
  }

  private noMerged(): GPUBuffer {
    this.placeholder ??= this.gpu.device.createBuffer({ label: 'compact_blocks:no-merged', size: 4, usage: GPUBufferUsage.STORAGE });
    return this.placeholder;
  }

  /** Records the compaction. */
  encode(encoder: GPUCommandEncoder, run: CompactBlocksRun): void {
    if (!Number.isInteger(run.numJobs) || run.numJobs <= 0) {
      throw new InvalidArgumentError('numJobs', `must be a positive integer; got ${run.numJobs}`);
    }
    if (run.jobs.size < run.numJobs * COMPACT_JOB_WORDS * 4) {
      throw new InvalidArgumentError('jobs', `holds ${run.jobs.size} B; ${run.numJobs * COMPACT_JOB_WORDS * 4} B needed`);
    }
    for (const [name, buffer] of [
      ['jobs', run.jobs],
      ['indices', run.indices],
      ['fullPool', run.cache.fullPool],
      ['quantPool', run.cache.quantPool],
    ] as const) {
      requireUsage(buffer, GPUBufferUsage.STORAGE, `compact_blocks ${name}`);
    }
    if (run.merged && run.slotSources) throw new InvalidArgumentError('slotSources', 'merged values and slot sources share the `merged` binding: pass one');
    const quantDestinations = run.destinations === 'quant';
    if (quantDestinations && !this.shape.quant) throw new InvalidArgumentError('destinations', "'quant' needs a quantized pool");
    const uniforms = this.gpu.uniformBuffer(
      'compact_blocks:params',
      COMPACT_BLOCKS_PARAMS.pack({ num_jobs: run.numJobs, max_blocks: run.cache.maxBlocksPerHead }),
    );
    const rowsPass = run.merged !== undefined && this.mergedRowsPass;
    const merged = run.merged === undefined ? 'none' : rowsPass ? 'none' : 'inline';
    const bindings = (withMerged: boolean): (GPUBuffer | null)[] => [
      uniforms,
      run.jobs,
      run.indices,
      run.cache.blockTable,
      run.cache.fullPool,
      run.cache.quantPool,
      (withMerged ? run.merged?.buffer : undefined) ?? run.slotSources?.state ?? this.noMerged(),
      quantDestinations ? run.cache.fullPool : null,
      (withMerged ? run.merged?.mask : undefined) ?? this.noMerged(),
    ];
    const pass = encoder.beginComputePass({ label: 'compact_blocks' });
    const compaction = this.variant(run.sources ?? 'any', merged, run.slotSources?.slots ?? 0, quantDestinations);
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, compaction), bindings(merged === 'inline'), run.numJobs);
    if (rowsPass) {
      // The merged rows over what the compaction wrote (dispatches of a pass are ordered; it reads no source).
      encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.variant('full', 'rows', 0, quantDestinations)), bindings(true), run.numJobs);
    }
    pass.end();
  }
}
