import mergeSlotsBody from '../../../shaders/merge_slots.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from '../cache/cache-constants.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';

const PARAMS = new UniformLayout('MergeSlotsParams', [
  { name: 'num_heads', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'stride', type: 'u32' },
]);

/**
 * f32 words of one head's slot state: keys and values `[slots][headDim]` each, masses `[slots]`, positions `[slots]`
 * (u32 bits), the count in use (u32 bits).
 *
 * @example
 * ```ts
 * const state = createStorageBuffer(gpu, 'slots', heads * slotStateWords(4, 64) * 4);
 * ```
 */
export function slotStateWords(slots: number, headDim: number): number {
  return slots * (2 * headDim + 2) + 1;
}

/** One head's slot state as the reference holds it (src/compress/merge-slots.ts MergeSlots). */
export interface SlotState {
  readonly count: number;
  readonly keys: Float32Array;
  readonly values: Float32Array;
  readonly mass: Float32Array;
  readonly positions: Uint32Array;
}

/**
 * Reads head `index`'s slot state out of the state buffer's words (for tests and, later, memory reports).
 *
 * @example
 * ```ts
 * const head0 = unpackSlotState(new Float32Array(await readBuffer(gpu, state)), 0, 4, 64);
 * ```
 */
export function unpackSlotState(words: Float32Array, index: number, slots: number, headDim: number): SlotState {
  const base = index * slotStateWords(slots, headDim);
  const m = base + 2 * slots * headDim;
  const bits = new Uint32Array(words.buffer, words.byteOffset, words.length);
  return {
    keys: words.slice(base, base + slots * headDim),
    values: words.slice(base + slots * headDim, m),
    mass: words.slice(m, m + slots),
    positions: bits.slice(m + slots, m + 2 * slots),
    count: bits[m + 2 * slots] ?? 0,
  };
}

/**
 * One run of {@link MergeSlotsKernel}.
 *
 * @example
 * ```ts
 * const run: MergeSlotsRun = { cache, heads, numHeads: 1, stride: 128, keptIndex, mass, state };
 * ```
 */
export interface MergeSlotsRun {
  readonly cache: PagedCacheBindings;
  /** u32 [numHeads][4]: row, tokens, kept, state head (src/kernels/compress/merge-values.ts packMergeHeads, outBase = state head). */
  readonly heads: GPUBuffer;
  readonly numHeads: number;
  /** Width of a kept-index / mass row (maxTokensPerHead). */
  readonly stride: number;
  /** u32 [row][stride]: kept logical indices, ascending; the others are absorbed. */
  readonly keptIndex: GPUBuffer;
  /** f32 [row][stride]: the merge weight per token (raw; the floor is added). */
  readonly mass: GPUBuffer;
  /** f32 [state heads][{@link slotStateWords}]: read and updated in place (all zero = empty slots). */
  readonly state: GPUBuffer;
  /**
   * The compaction path (a kernel built with `load: true`): f32 [row][capacity] persistent slot masses. The
   * kernel loads each head's first `count` tokens (count from `state`, the rest of which must be zero) and these
   * masses into `state`, and writes the masses after absorbing back.
   */
  readonly slotMasses?: GPUBuffer;
}

/**
 * MergeMode 'slots' on the GPU (shaders/merge_slots.wgsl; reference src/compress/merge-slots.ts absorbIntoSlots):
 * absorbs each head's evicted tokens, read from the paged cache, into its slot state (persistent in `state`, or
 * with `load` loaded from the cache and the slot masses, as the GPU compaction runs it: src/compress/gpu-slots.ts).
 *
 * @example
 * ```ts
 * new MergeSlotsKernel(gpu, { full, quant, slots: 4 }, { weightFloor: MERGE_WEIGHT_FLOOR }).encode(encoder, run);
 * ```
 */
export class MergeSlotsKernel {
  readonly spec: KernelSpec;
  private readonly words: number;
  private readonly load: boolean;
  /** Bound as `slot_masses` by a kernel without `load`. */
  private placeholder: GPUBuffer | null = null;

  constructor(
    private readonly gpu: GpuContext,
    shape: { full: BlockLayout; quant: BlockLayout | null; slots: number; workgroupSize?: number; load?: { readonly capacity: number } },
    rule: { readonly weightFloor: number },
  ) {
    if (!Number.isInteger(shape.slots) || shape.slots < 1 || shape.slots > 16) {
      throw new InvalidArgumentError('slots', `must be an integer in 1..16; got ${shape.slots}`);
    }
    this.words = slotStateWords(shape.slots, shape.full.headDim);
    this.load = shape.load !== undefined;
    if (shape.load && !(Number.isInteger(shape.load.capacity) && shape.load.capacity >= shape.slots)) {
      throw new InvalidArgumentError('load.capacity', `must be an integer ≥ slots (${shape.slots}); got ${shape.load.capacity}`);
    }
    this.spec = {
      name: 'merge_slots',
      body: mergeSlotsBody,
      libraries: [kvReadLibrary],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: shape.workgroupSize ?? 64 },
        SLOTS: { type: 'u32', value: shape.slots },
        SLOT_STATE_WORDS: { type: 'u32', value: this.words },
        MERGE_WEIGHT_FLOOR: { type: 'f32', value: rule.weightFloor },
        LOAD_SLOTS: { type: 'bool', value: shape.load !== undefined },
        SLOT_CAPACITY: { type: 'u32', value: shape.load?.capacity ?? 1 },
      },
      uniforms: [PARAMS],
    };
  }

  /** Records the absorption: one workgroup per head. */
  encode(encoder: GPUCommandEncoder, run: MergeSlotsRun): void {
    if (!Number.isInteger(run.numHeads) || run.numHeads <= 0) {
      throw new InvalidArgumentError('numHeads', `must be a positive integer; got ${run.numHeads}`);
    }
    for (const [name, buffer] of [
      ['heads', run.heads],
      ['keptIndex', run.keptIndex],
      ['mass', run.mass],
      ['state', run.state],
    ] as const) {
      requireUsage(buffer, GPUBufferUsage.STORAGE, `merge_slots ${name}`);
    }
    if (this.load !== (run.slotMasses !== undefined)) {
      throw new InvalidArgumentError('slotMasses', this.load ? 'a loading kernel needs the slot masses' : 'this kernel was built without `load`: it keeps its state in `state` alone');
    }
    this.placeholder ??= this.gpu.device.createBuffer({ label: 'merge_slots:no-masses', size: 4, usage: GPUBufferUsage.STORAGE });
    const uniforms = this.gpu.uniformBuffer('merge_slots:params', PARAMS.pack({ num_heads: run.numHeads, max_blocks: run.cache.maxBlocksPerHead, stride: run.stride }));
    const pass = encoder.beginComputePass({ label: 'merge_slots' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [uniforms, run.heads, run.keptIndex, run.mass, run.cache.blockTable, run.cache.fullPool, run.cache.quantPool, run.state, run.slotMasses ?? this.placeholder],
      run.numHeads,
    );
    pass.end();
  }
}
