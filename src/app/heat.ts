import type { PagedKvCache } from '../engine/paged-kv-cache.js';

/**
 * Attention received by the tokens one sequence keeps, per layer and KV head: for each kept token its original
 * position and its mean attention probability (Σp / number of queries that could see it, summed over the query
 * heads of the group), the statistic H2O-style policies rank by.
 *
 * @example
 * ```ts
 * const heat = await reader.read(cache, seq);
 * heat.heads[0]?.[1]?.positions; // kept positions of layer 0, KV head 1
 * ```
 */
export interface HeatSnapshot {
  /** Tokens ever appended to the sequence: positions run 0..seqLen−1. */
  readonly seqLen: number;
  /** [layer][kvHead]. */
  readonly heads: HeadHeat[][];
}

/**
 * One (layer, KV head) of a {@link HeatSnapshot}.
 */
export interface HeadHeat {
  /** Original positions of the kept tokens, ascending. */
  readonly positions: Uint32Array;
  /** Mean attention each kept token received (same order). */
  readonly scores: Float32Array;
}

/**
 * Reads {@link HeatSnapshot}s of a sequence with as few readbacks as possible. Positions of a head only change
 * when the cache compresses (tokens are appended at consecutive positions otherwise), so they are read from the
 * blocks (readHead) only after a compression and extended on the host between compressions; the statistics come
 * back in one copy and one map per call.
 *
 * @example
 * ```ts
 * const reader = new HeatReader();
 * reader.invalidate();                 // after a compression
 * const heat = await reader.read(cache, seq);
 * ```
 */
export class HeatReader {
  private positions: Uint32Array[][] | null = null;

  /** Forgets the cached positions: call after the sequence was compressed (or a new sequence starts). */
  invalidate(): void {
    this.positions = null;
  }

  /** Reads the current heat of `seqId` in `cache`. */
  async read(cache: PagedKvCache, seqId: number): Promise<HeatSnapshot> {
    const { layers, kvHeads } = cache.shape;
    const seqLen = cache.sequenceLength(seqId);
    const counts = Array.from({ length: layers }, (_, l) =>
      Array.from({ length: kvHeads }, (_, h) => cache.tokenCount(seqId, l, h)),
    );
    const positions = await this.currentPositions(cache, seqId, counts);
    const { sums, visible } = await readStats(cache, seqId);
    const stride = cache.maxTokensPerHead;
    const heads = counts.map((layer, l) =>
      layer.map((count, h): HeadHeat => {
        const base = (l * kvHeads + h) * stride;
        const scores = new Float32Array(count);
        for (let t = 0; t < count; t++) {
          const n = visible[base + t] ?? 0;
          scores[t] = n > 0 ? (sums[base + t] ?? 0) / n : 0;
        }
        return { positions: positions[l]?.[h] ?? new Uint32Array(0), scores };
      }),
    );
    return { seqLen, heads };
  }

  private async currentPositions(cache: PagedKvCache, seqId: number, counts: number[][]): Promise<Uint32Array[][]> {
    if (this.positions === null) {
      const read: Uint32Array[][] = [];
      for (let l = 0; l < counts.length; l++) {
        const row: Uint32Array[] = [];
        for (let h = 0; h < (counts[l]?.length ?? 0); h++) row.push((await cache.readHead(seqId, l, h)).positions);
        read.push(row);
      }
      this.positions = read;
    }
    // Appended tokens since the last read sit at the end of each head, at the positions that followed.
    const seqLen = cache.sequenceLength(seqId);
    this.positions = this.positions.map((layer, l) =>
      layer.map((known, h) => {
        const count = counts[l]?.[h] ?? known.length;
        if (count === known.length) return known;
        const grown = new Uint32Array(count);
        grown.set(known.subarray(0, Math.min(count, known.length)));
        const added = count - known.length;
        for (let i = 0; i < added; i++) grown[known.length + i] = seqLen - added + i;
        return grown;
      }),
    );
    return this.positions;
  }
}

/**
 * attnSum and attnCount of a sequence's rows, [layer][kvHead][maxTokensPerHead] each, copied into one staging
 * buffer and mapped once (the rows of one layer are contiguous; layers are seqSlots rows apart).
 */
async function readStats(cache: PagedKvCache, seqId: number): Promise<{ sums: Float32Array; visible: Float32Array }> {
  const { gpu } = cache;
  const { layers, kvHeads } = cache.shape;
  const slot = cache.meta.slotOf(seqId);
  const layerBytes = kvHeads * cache.maxTokensPerHead * 4;
  const half = layers * layerBytes;
  const staging = gpu.device.createBuffer({
    label: 'app:heat-readback',
    size: 2 * half,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const encoder = gpu.device.createCommandEncoder({ label: 'app:heat' });
    for (let l = 0; l < layers; l++) {
      const offset = (l * cache.meta.seqSlots + slot) * layerBytes;
      encoder.copyBufferToBuffer(cache.attention.statistics.attnSum, offset, staging, l * layerBytes, layerBytes);
      encoder.copyBufferToBuffer(cache.attention.statistics.attnCount, offset, staging, half + l * layerBytes, layerBytes);
    }
    gpu.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const all = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    return { sums: all.subarray(0, half / 4), visible: all.subarray(half / 4) };
  } finally {
    staging.destroy();
  }
}
