import { InvalidArgumentError } from '../../errors.js';

/**
 * The GPU buffers of a paged cache that kernels read, for ONE layer: the block table and context lengths cover every
 * layer, the pools are that layer's own (block ids in its table rows are local to them). A kernel run with these
 * reads only the table rows of that layer.
 *
 * @example
 * ```ts
 * const bindings: PagedCacheBindings = cache.storage.bindings(3); // layer 3's pools of a PagedKvCache
 * attention.encode(encoder, { cache: bindings, layer: 3, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 512 });
 * ```
 */
export interface PagedCacheBindings {
  readonly blockTable: GPUBuffer;
  readonly contextLens: GPUBuffer;
  /** The layer's full pool. */
  readonly fullPool: GPUBuffer;
  /** The layer's quantized pool; a 4-byte placeholder when the cache has no quantized pool. */
  readonly quantPool: GPUBuffer;
  readonly seqSlots: number;
  readonly maxBlocksPerHead: number;
}

/**
 * The per-token attention statistics of a cache, f32 `[row][maxTokensPerHead]` each (CONTRIBUTING.md).
 *
 * @example
 * ```ts
 * const stats: AttentionStatsBuffers = { attnSum: cache.attnSum, attnSqSum: cache.attnSqSum, attnCount: cache.attnCount };
 * ```
 */
export interface AttentionStatsBuffers {
  readonly attnSum: GPUBuffer;
  readonly attnSqSum: GPUBuffer;
  readonly attnCount: GPUBuffer;
}

/**
 * What every paged attention kernel run takes: n roped queries of known slots and positions against one layer of
 * the cache (PagedAttentionRun, PrefillAttentionRun and FlashDecodeRun add their own fields).
 *
 * @example
 * ```ts
 * const run: AttentionQueryRun = { cache: storage.bindings(0), layer: 0, numQueries: 1, queries, querySlots, queryPositions, out };
 * ```
 */
export interface AttentionQueryRun {
  readonly cache: PagedCacheBindings;
  readonly layer: number;
  readonly numQueries: number;
  /** f32 [numQueries][nHeads][headDim], RoPE applied. */
  readonly queries: GPUBuffer;
  /** u32 [numQueries]: the sequence slot of each query. */
  readonly querySlots: GPUBuffer;
  /** u32 [numQueries]: each query's position; it sees cached tokens at positions ≤ it. */
  readonly queryPositions: GPUBuffer;
  /** f32 [numQueries][nHeads][headDim] output. */
  readonly out: GPUBuffer;
  /** Default 1/√headDim. */
  readonly scale?: number;
  /** A compute pass the caller keeps open to record into (default: a pass of the kernel's own). */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * Statistics a fused attention run adds to the cache's buffers: Σp and Σp² over the group's heads and the segment's
 * queries, and the number of queries that could see each token (what AccumulateAttentionKernel adds from a
 * probability buffer).
 *
 * @example
 * ```ts
 * const stats: AttentionStatsRun = { segments, numSegments: 1, target: { attnSum, attnSqSum, attnCount } };
 * ```
 */
export interface AttentionStatsRun {
  /** u32 [numSegments][3] from attentionSegments(): no slot twice. */
  readonly segments: GPUBuffer;
  readonly numSegments: number;
  readonly target: AttentionStatsBuffers;
}

/** Throws unless `value` is a positive integer. */
export function positiveInteger(field: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
  }
}

/** Checks the query count and that queries and out hold [numQueries][nHeads][headDim] floats. */
export function checkQueries(run: AttentionQueryRun, nHeads: number, headDim: number): void {
  positiveInteger('numQueries', run.numQueries);
  const needQ = run.numQueries * nHeads * headDim * 4;
  if (run.queries.size < needQ || run.out.size < needQ) {
    throw new InvalidArgumentError('queries', `queries and out need ${needQ} B`);
  }
}

/**
 * Checks the statistics buffers cover `layer`'s rows of every slot; returns the tokens per head row
 * (max_tokens of the statistics kernels).
 */
export function checkStatsBuffers(buffers: AttentionStatsBuffers, cache: PagedCacheBindings, layer: number, kvHeads: number, blockSize: number): number {
  const maxTokens = cache.maxBlocksPerHead * blockSize;
  const statsBytes = (layer + 1) * cache.seqSlots * kvHeads * maxTokens * 4;
  for (const [name, buffer] of Object.entries(buffers)) {
    if (buffer.size < statsBytes) {
      throw new InvalidArgumentError(name, `holds ${buffer.size} B; layer ${layer} needs ${statsBytes} B`);
    }
  }
  return maxTokens;
}

/** Checks a fused statistics run's segments; returns max_tokens as {@link checkStatsBuffers}. */
export function checkStatsRun(stats: AttentionStatsRun, cache: PagedCacheBindings, layer: number, kvHeads: number, blockSize: number): number {
  positiveInteger('numSegments', stats.numSegments);
  if (stats.segments.size < stats.numSegments * 12) {
    throw new InvalidArgumentError('segments', `holds ${stats.segments.size} B; ${stats.numSegments} segments need ${stats.numSegments * 12} B`);
  }
  return checkStatsBuffers(stats.target, cache, layer, kvHeads, blockSize);
}

/**
 * The bindings the attention shaders share, in their order: uniforms, queries, query slots and positions, block
 * table, context lengths, full and quantized pool; then each kernel's own (`rest`).
 */
export function attentionBindings(uniforms: GPUBuffer, run: AttentionQueryRun, quantPool: GPUBuffer, ...rest: GPUBuffer[]): GPUBuffer[] {
  const { cache } = run;
  return [uniforms, run.queries, run.querySlots, run.queryPositions, cache.blockTable, cache.contextLens, cache.fullPool, quantPool, ...rest];
}
