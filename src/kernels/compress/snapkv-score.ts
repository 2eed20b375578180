import snapkvScoreBody from '../../../shaders/snapkv_score.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import { snapkvFirstToken, snapkvUnrolledScore, snapkvKeyRead } from './snapkv-unrolled.js';
import scoreCommonLibrary from '../../../shaders/score_common.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { cacheConstants } from '../cache/cache-constants.js';
import { packSnapKVParams, SNAPKV_PARAMS, type SnapKVRun, type SnapKVShape, snapkvBlock } from './snapkv-lse.js';

// One 4-byte stand-in per context for runs that do not ask for the unpooled means (binding 9 must be bound).
const PLACEHOLDERS = new WeakMap<GpuContext, GPUBuffer>();

/**
 * Pooling of {@link SnapKVScoreKernel}: odd kernel size (1 = none) and mode.
 */
export interface SnapKVPooling {
  readonly kernelSize: number;
  readonly mode: 'avg' | 'max';
}

/**
 * SnapKV/TOVA pass 2: per token, the mean window probability (the partitions' normalisers from
 * {@link SnapKVLseKernel}, merged here), pooled along token order with 'same' padding, then protected. A thread
 * holds keyTile keys (decoded once) and reads each (query, head) pair's query once for all of them; the pairs'
 * normalisers are staged in workgroup memory; a workgroup recomputes a halo of kernelSize/2 tokens each side so
 * pooling needs no second pass. TOVA is rows = 1, kernelSize = 1.
 *
 * @example
 * ```ts
 * new SnapKVScoreKernel(gpu, { nHeads: 8, kvHeads: 2, full, quant }, { kernelSize: 5, mode: 'avg' }).encode(encoder, run);
 * ```
 */
export class SnapKVScoreKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;
  /** Tokens whose scores one workgroup writes: its threads × keyTile minus the pooling halo. */
  private readonly outTile: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: SnapKVShape,
    readonly pooling: SnapKVPooling,
  ) {
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    if (!Number.isInteger(pooling.kernelSize) || pooling.kernelSize <= 0 || pooling.kernelSize % 2 === 0) {
      throw new InvalidArgumentError('kernelSize', `must be a positive odd integer; got ${pooling.kernelSize}`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    if (!Number.isInteger(this.workgroupSize) || this.workgroupSize <= 0) {
      throw new InvalidArgumentError('workgroupSize', `must be a positive integer; got ${this.workgroupSize}`);
    }
    const tokenBlock = snapkvBlock('keyTile', shape.keyTile);
    const radius = (pooling.kernelSize - 1) / 2;
    this.outTile = this.workgroupSize * tokenBlock - 2 * radius;
    if (this.outTile < 1) {
      throw new InvalidArgumentError('kernelSize', `${pooling.kernelSize} leaves no token of a workgroup's ${this.workgroupSize * tokenBlock} past its halo; use a smaller kernel`);
    }
    this.spec = {
      name: 'snapkv_score',
      body: snapkvScoreBody,
      libraries: [
        snapkvUnrolledScore(shape.full.headDim, tokenBlock, snapkvKeyRead(shape.full.headDim, shape.full.format === 'f16', shape.quant !== null), shape.storedLogits),
        snapkvFirstToken(shape.skipsLeading ?? false),
        kvReadLibrary,
        scoreCommonLibrary,
      ],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        POOL_RADIUS: { type: 'u32', value: radius },
        TOKEN_BLOCK: { type: 'u32', value: tokenBlock },
        POOL_MAX: { type: 'bool', value: pooling.mode === 'max' },
      },
      uniforms: [SNAPKV_PARAMS],
    };
  }

  private placeholder(): GPUBuffer {
    let buffer = PLACEHOLDERS.get(this.gpu);
    if (!buffer) {
      buffer = this.gpu.device.createBuffer({ label: 'snapkv_score:no-means', size: 4, usage: GPUBufferUsage.STORAGE });
      PLACEHOLDERS.set(this.gpu, buffer);
    }
    return buffer;
  }

  /** Records pass 2 into `encoder` (after pass 1 of the same run). */
  encode(encoder: GPUCommandEncoder, run: SnapKVRun): void {
    const { bytes, tiles } = packSnapKVParams(this.shape, run, this.outTile);
    const uniforms = this.gpu.uniformBuffer('snapkv_score:params', bytes);
    const pass = encoder.beginComputePass({ label: 'snapkv_score' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        // The stored-logits variant reads no window query (its 'auto' layout has no binding 1).
        this.shape.storedLogits ? null : run.window.queries,
        run.window.positions,
        run.lse,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        run.scores,
        run.means ?? this.placeholder(),
        this.shape.storedLogits ? (run.logits ?? null) : null,
        this.shape.skipsLeading ? (run.firstTokens ?? null) : null,
      ],
      run.target.layerCount * this.shape.kvHeads * tiles,
    );
    pass.end();
  }
}
