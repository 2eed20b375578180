import slotIndexBody from '../../../shaders/slot_index.wgsl';
import meanAttentionBody from '../../../shaders/mean_attention.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { SLOT_SOURCE_FLAG } from './compact-blocks.js';

const PARAMS = new UniformLayout('SlotIndexParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'slots', type: 'u32' },
]);

const MEAN_PARAMS = new UniformLayout('MeanAttentionParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'stride', type: 'u32' },
  { name: 'chunks', type: 'u32' },
]);

/**
 * One absorbing head: its row, its slots before (`count`) and after absorbing (`countAfter`), and its selection's
 * kept count (`kept`, the old slots included).
 */
export interface SlotIndexHead {
  readonly row: number;
  readonly count: number;
  readonly countAfter: number;
  readonly kept: number;
}

/**
 * Packs heads into the u32 [heads][4] layout slot_index reads; head i's slots are state head i.
 *
 * @example
 * ```ts
 * const words = packSlotIndexHeads([{ row: 3, count: 2, countAfter: 4, kept: 20 }]);
 * ```
 */
export function packSlotIndexHeads(heads: readonly SlotIndexHead[]): Uint32Array {
  const out = new Uint32Array(heads.length * 4);
  heads.forEach((h, i) => out.set([h.row, h.count, h.countAfter, h.kept], i * 4));
  return out;
}

/**
 * Plain TS reference of shaders/slot_index.wgsl for head `stateHead` (its kept row given alone): the new count
 * and the compaction and gather lists.
 *
 * @example
 * ```ts
 * slotIndexReference({ row: 0, count: 1, countAfter: 2, kept: 3 }, 0, 4, Uint32Array.of(0, 5, 9)).compact;
 * // [0x80000000, 0x80000001, 5, 9]
 * ```
 */
export function slotIndexReference(head: SlotIndexHead, stateHead: number, slots: number, kept: Uint32Array): { total: number; compact: Uint32Array; gather: Uint32Array } {
  const total = head.countAfter + head.kept - head.count;
  const compact = new Uint32Array(total);
  const gather = new Uint32Array(total);
  for (let j = 0; j < total; j++) {
    if (j < head.countAfter) {
      compact[j] = (SLOT_SOURCE_FLAG | (stateHead * slots + j)) >>> 0;
      gather[j] = j;
    } else {
      const old = kept[head.count + j - head.countAfter] ?? 0;
      compact[j] = old;
      gather[j] = old;
    }
  }
  return { total, compact, gather };
}

/** One run of {@link SlotIndexKernel}. */
export interface SlotIndexRun {
  /** u32 [numHeads][4] ({@link packSlotIndexHeads}). */
  readonly heads: GPUBuffer;
  readonly numHeads: number;
  readonly stride: number;
  /** Slots per state head (mergeSlots). */
  readonly slots: number;
  readonly keptIndex: GPUBuffer;
  /** u32 [row]: read as the selection's counts, overwritten with the new counts of the listed rows. */
  readonly keptCounts: GPUBuffer;
  readonly compactIndex: GPUBuffer;
  readonly gatherIndex: GPUBuffer;
}

/**
 * The kept-index rewrite of merge 'slots' (shaders/slot_index.wgsl; reference {@link slotIndexReference}), and the
 * mean attention per query (shaders/mean_attention.wgsl) that weighs the absorbed tokens under statistics policies.
 *
 * @example
 * ```ts
 * new SlotIndexKernel(gpu).encode(encoder, { heads, numHeads, stride, slots: 4, keptIndex, keptCounts, compactIndex, gatherIndex });
 * ```
 */
export class SlotIndexKernel {
  readonly spec: KernelSpec;
  readonly meanSpec: KernelSpec;

  constructor(
    private readonly gpu: GpuContext,
    private readonly workgroupSize = 64,
  ) {
    this.spec = { name: 'slot_index', body: slotIndexBody, constants: { WORKGROUP_SIZE: { type: 'u32', value: workgroupSize } }, uniforms: [PARAMS] };
    this.meanSpec = { name: 'mean_attention', body: meanAttentionBody, constants: { WORKGROUP_SIZE: { type: 'u32', value: workgroupSize } }, uniforms: [MEAN_PARAMS] };
  }

  /** Records the rewrite: one workgroup per head. */
  encode(encoder: GPUCommandEncoder, run: SlotIndexRun): void {
    if (!Number.isInteger(run.numHeads) || run.numHeads <= 0) throw new InvalidArgumentError('numHeads', `must be a positive integer; got ${run.numHeads}`);
    for (const [name, buffer] of [
      ['heads', run.heads],
      ['keptIndex', run.keptIndex],
      ['keptCounts', run.keptCounts],
      ['compactIndex', run.compactIndex],
      ['gatherIndex', run.gatherIndex],
    ] as const) {
      requireUsage(buffer, GPUBufferUsage.STORAGE, `slot_index ${name}`);
    }
    const uniforms = this.gpu.uniformBuffer('slot_index:params', PARAMS.pack({ num_heads: run.numHeads, stride: run.stride, slots: run.slots }));
    const pass = encoder.beginComputePass({ label: 'slot_index' });
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.spec), [uniforms, run.heads, run.keptIndex, run.keptCounts, run.compactIndex, run.gatherIndex], run.numHeads);
    pass.end();
  }

  /**
   * Records mean[row][t] = attnSum / attnCount (0 before any query) for t < tokens of each head of `heads`
   * (u32 [numHeads][4]: row, tokens, …, as packMergeHeads lays them out).
   */
  encodeMean(encoder: GPUCommandEncoder, run: { heads: GPUBuffer; numHeads: number; maxTokens: number; stride: number; sum: GPUBuffer; count: GPUBuffer; out: GPUBuffer }): void {
    const chunks = Math.max(1, Math.ceil(run.maxTokens / this.workgroupSize));
    const uniforms = this.gpu.uniformBuffer('mean_attention:params', MEAN_PARAMS.pack({ num_heads: run.numHeads, stride: run.stride, chunks }));
    const pass = encoder.beginComputePass({ label: 'mean_attention' });
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.meanSpec), [uniforms, run.heads, run.sum, run.count, run.out], run.numHeads * chunks);
    pass.end();
  }
}
