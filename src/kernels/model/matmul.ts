import matmulBody from '../../../shaders/matmul.wgsl';
import matmulDirectBody from '../../../shaders/matmul_direct.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { dispatchKernel, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const MATMUL_PARAMS = new UniformLayout('MatmulParams', [
  { name: 'rows', type: 'u32' },
  { name: 'in_dim', type: 'u32' },
  { name: 'out_dim', type: 'u32' },
]);

/**
 * Output tile of one workgroup and per-thread register block; each value is a pipeline-cache key.
 */
export interface MatmulTile {
  /** Rows (tokens) per workgroup. */
  readonly tileM: number;
  /** Output columns per workgroup. */
  readonly tileN: number;
  /** Input channels staged per step. */
  readonly tileK: number;
  /** Rows per thread (divides tileM). */
  readonly threadM: number;
  /** Columns per thread (divides tileN). */
  readonly threadN: number;
}

/**
 * Tile for decode and short chunks: a GEMV in disguise, so a workgroup covers few rows and many columns and each
 * weight tile is staged once for all of them.
 *
 * @example
 * ```ts
 * new MatmulKernel(gpu, { small: MATMUL_SMALL_TILE, large: MATMUL_SMALL_TILE });
 * ```
 */
export const MATMUL_SMALL_TILE: MatmulTile = { tileM: 4, tileN: 64, tileK: 32, threadM: 4, threadN: 1 };

/**
 * Tile for prefill chunks: 64 × 64 outputs per workgroup of 256 threads, 4 × 4 per thread, 8 KiB of shared memory.
 *
 * @example
 * ```ts
 * new MatmulKernel(gpu, { smallRowsBelow: 0 }); // always MATMUL_LARGE_TILE
 * ```
 */
export const MATMUL_LARGE_TILE: MatmulTile = { tileM: 64, tileN: 64, tileK: 16, threadM: 4, threadN: 4 };

/**
 * How the product is computed: `tiled` stages operand tiles in workgroup memory (shaders/matmul.wgsl, for real
 * GPUs); `direct` is one barrier-free thread per output (shaders/matmul_direct.wgsl), 10-50× faster on SwiftShader,
 * whose workgroup barriers are ~100× slower than straight-line code.
 *
 * @example
 * ```ts
 * new MatmulKernel(gpu, { strategy: 'tiled' });
 * ```
 */
export type MatmulStrategy = 'tiled' | 'direct';

/**
 * Tuning of {@link MatmulKernel}.
 *
 * @example
 * ```ts
 * new MatmulKernel(gpu, { strategy: 'tiled', smallRowsBelow: 16 });
 * ```
 */
export interface MatmulKernelOptions {
  /** Default: `direct` on a software (fallback) adapter, `tiled` otherwise. */
  readonly strategy?: MatmulStrategy;
  /** Threads per workgroup of the direct strategy (default 64). */
  readonly directWorkgroupSize?: number;
  readonly small?: MatmulTile;
  readonly large?: MatmulTile;
  /** Runs with fewer rows than this use the small tile (default 32). */
  readonly smallRowsBelow?: number;
}

/**
 * One product.
 */
export interface MatmulRun {
  readonly rows: number;
  readonly inDim: number;
  readonly outDim: number;
  /** f32 [rows][inDim]. */
  readonly x: GPUBuffer;
  /** f32 [outDim][inDim], row-major as in a llama2.c checkpoint. */
  readonly w: GPUBuffer;
  /** f32 [rows][outDim]; must differ from `x` and `w`. */
  readonly out: GPUBuffer;
  /** Adds the product to what `out` holds (the residual connection) instead of overwriting it. */
  readonly accumulate?: boolean;
}

function checkTile(gpu: GpuContext, tile: MatmulTile): void {
  const { tileM, tileN, tileK, threadM, threadN } = tile;
  for (const [name, value] of Object.entries(tile)) requirePositive(`tile.${name}`, value as number);
  if (tileM % threadM !== 0 || tileN % threadN !== 0) {
    throw new InvalidArgumentError('tile', `threadM ${threadM} / threadN ${threadN} must divide tileM ${tileM} / tileN ${tileN}`);
  }
  const threads = (tileM / threadM) * (tileN / threadN);
  if (threads > gpu.limits.maxComputeInvocationsPerWorkgroup) {
    throw new InvalidArgumentError('tile', `${threads} threads > maxComputeInvocationsPerWorkgroup ${gpu.limits.maxComputeInvocationsPerWorkgroup}`);
  }
  const shared = (tileM + tileN) * tileK * 4;
  if (shared > gpu.limits.maxComputeWorkgroupStorageSize) {
    throw new InvalidArgumentError('tile', `${shared} B of shared memory > maxComputeWorkgroupStorageSize ${gpu.limits.maxComputeWorkgroupStorageSize}`);
  }
}

/**
 * out = x · Wᵀ (optionally += for residuals) for x [rows][in] and a row-major weight [out][in]. The tiled
 * strategy goes through workgroup memory with a tile picked per run from the row count; see
 * {@link MatmulStrategy}. Correct for any sizes.
 *
 * @example
 * ```ts
 * const matmul = new MatmulKernel(gpu);
 * matmul.encode(encoder, { rows: n, inDim: 64, outDim: 172, x, w, out });
 * ```
 */
export class MatmulKernel {
  readonly strategy: MatmulStrategy;
  private readonly directWorkgroupSize: number;
  private readonly small: MatmulTile;
  private readonly large: MatmulTile;
  private readonly smallRowsBelow: number;
  private readonly specs = new Map<string, KernelSpec>();

  constructor(
    private readonly gpu: GpuContext,
    options: MatmulKernelOptions = {},
  ) {
    this.strategy = options.strategy ?? (gpu.adapter.isFallbackAdapter ? 'direct' : 'tiled');
    this.directWorkgroupSize = options.directWorkgroupSize ?? 64;
    requirePositive('directWorkgroupSize', this.directWorkgroupSize);
    this.small = options.small ?? MATMUL_SMALL_TILE;
    this.large = options.large ?? MATMUL_LARGE_TILE;
    this.smallRowsBelow = options.smallRowsBelow ?? 32;
    checkTile(gpu, this.small);
    checkTile(gpu, this.large);
  }

  /** The tile a run of `rows` rows uses. */
  tileFor(rows: number): MatmulTile {
    return rows < this.smallRowsBelow ? this.small : this.large;
  }

  /** The kernel spec of one tile (or the direct strategy when null) and accumulate mode, cached per instance. */
  specFor(tile: MatmulTile | null, accumulate: boolean): KernelSpec {
    const key = tile ? `${tile.tileM}x${tile.tileN}x${tile.tileK}/${tile.threadM}x${tile.threadN}/${accumulate}` : `direct/${accumulate}`;
    let spec = this.specs.get(key);
    const u32 = (value: number) => ({ type: 'u32', value }) as const;
    if (!spec && !tile) {
      spec = {
        name: 'matmul_direct',
        body: matmulDirectBody,
        constants: { WORKGROUP_SIZE: u32(this.directWorkgroupSize), ACCUMULATE: { type: 'bool', value: accumulate } },
        uniforms: [MATMUL_PARAMS],
      };
      this.specs.set(key, spec);
    }
    if (!spec && tile) {
      spec = {
        name: 'matmul',
        body: matmulBody,
        constants: {
          TILE_M: u32(tile.tileM),
          TILE_N: u32(tile.tileN),
          TILE_K: u32(tile.tileK),
          THREAD_M: u32(tile.threadM),
          THREAD_N: u32(tile.threadN),
          ACCUMULATE: { type: 'bool', value: accumulate },
        },
        uniforms: [MATMUL_PARAMS],
      };
      this.specs.set(key, spec);
    }
    if (!spec) throw new InvalidArgumentError('tile', 'unreachable: no matmul spec');
    return spec;
  }

  /** Records the product into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: MatmulRun, shared?: SharedPass): void {
    requirePositive('rows', run.rows);
    requirePositive('inDim', run.inDim);
    requirePositive('outDim', run.outDim);
    if (run.out === run.x || run.out === run.w) {
      throw new InvalidArgumentError('out', 'matmul output must be a different buffer from its inputs');
    }
    requireStorage('x', run.x, run.rows * run.inDim * 4);
    requireStorage('w', run.w, run.outDim * run.inDim * 4);
    requireStorage('out', run.out, run.rows * run.outDim * 4);
    const tile = this.strategy === 'tiled' ? this.tileFor(run.rows) : null;
    const params = MATMUL_PARAMS.pack({ rows: run.rows, in_dim: run.inDim, out_dim: run.outDim });
    const workgroups = tile
      ? Math.ceil(run.rows / tile.tileM) * Math.ceil(run.outDim / tile.tileN)
      : Math.ceil((run.rows * run.outDim) / this.directWorkgroupSize);
    const pipeline = kernelPipeline(this.gpu, this.specFor(tile, run.accumulate ?? false));
    dispatchKernel(this.gpu, encoder, pipeline, params, [run.x, run.w, run.out], workgroups, shared);
  }
}
