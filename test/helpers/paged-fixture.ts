import { type BlockLayout, type BlockFormat, blockLayout, encodeBlockRef } from '../../src/format/layout.js';
import { createStorageBuffer } from '../../src/gpu/buffers.js';
import type { GpuContext } from '../../src/gpu/context.js';
import type { PagedCacheBindings } from '../../src/kernels/cache/paged-attention.js';
import { decodeBlock, encodeBlock } from '../../src/format/block-codec.js';
import { seededRandom } from './gpu.js';

/** What a hand-built paged cache holds, decoded, so references can read it. */
export interface PagedFixture {
  readonly bindings: PagedCacheBindings;
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  /** Decoded (what the GPU should see) K, V and positions per [slot][kvHead]. */
  readonly keys: Float32Array[][];
  readonly values: Float32Array[][];
  readonly positions: Uint32Array[][];
  destroy(): void;
}

/**
 * Builds a paged cache by hand with the reference codec: per (slot, head) `lengths[slot][head]` tokens of random
 * K/V, the first `quantBlocks` blocks of each head in the quantized format, blocks scattered in shuffled order
 * over the pools (so no kernel can get away with assuming contiguity).
 */
export function buildPagedFixture(
  gpu: GpuContext,
  options: {
    headDim: number;
    blockSize: number;
    kvHeads: number;
    lengths: number[][];
    fullFormat: 'f32' | 'f16';
    quantFormat?: BlockFormat;
    quantBlocks?: number;
    seed?: number;
    layers?: number;
    layer?: number;
  },
): PagedFixture {
  const { headDim, blockSize, kvHeads, lengths } = options;
  const random = seededRandom(options.seed ?? 1);
  const layers = options.layers ?? 1;
  const layer = options.layer ?? 0;
  const full = blockLayout(options.fullFormat, { headDim, blockSize });
  const quant = options.quantFormat ? blockLayout(options.quantFormat, { headDim, blockSize }) : null;
  const seqSlots = lengths.length;
  const maxBlocks = Math.max(1, ...lengths.flat().map((n) => Math.ceil(n / blockSize)));
  const table = new Uint32Array(layers * seqSlots * kvHeads * maxBlocks);
  const contextLens = new Uint32Array(layers * seqSlots * kvHeads);
  const fullBlocks: Uint32Array[] = [new Uint32Array(full.wordsPerBlock)];
  const quantBlocksList: Uint32Array[] = [new Uint32Array(quant?.wordsPerBlock ?? 1)];
  const keys: Float32Array[][] = [];
  const values: Float32Array[][] = [];
  const positions: Uint32Array[][] = [];
  const pending: { words: Uint32Array; quant: boolean; row: number; index: number }[] = [];
  lengths.forEach((heads, slot) => {
    keys.push([]);
    values.push([]);
    positions.push([]);
    heads.forEach((n, head) => {
      const row = (layer * seqSlots + slot) * kvHeads + head;
      contextLens[row] = n;
      const k = new Float32Array(n * headDim);
      const v = new Float32Array(n * headDim);
      const pos = new Uint32Array(n);
      let next = 0;
      for (let t = 0; t < n; t++) {
        // increasing but gappy positions, as after eviction
        next += 1 + (random() < 0.2 ? 1 : 0);
        pos[t] = next;
      }
      for (let b = 0; b * blockSize < n; b++) {
        const count = Math.min(blockSize, n - b * blockSize);
        const kb = Float32Array.from({ length: count * headDim }, () => random() * 4 - 2);
        const vb = Float32Array.from({ length: count * headDim }, () => random() * 4 - 2);
        const pb = pos.slice(b * blockSize, b * blockSize + count);
        const isQuant = quant !== null && b < (options.quantBlocks ?? 0);
        const layout = isQuant && quant ? quant : full;
        const words = encodeBlock(layout, kb, vb, pb, count);
        const decoded = decodeBlock(layout, words, count);
        k.set(decoded.k, b * blockSize * headDim);
        v.set(decoded.v, b * blockSize * headDim);
        pending.push({ words, quant: isQuant, row, index: b });
      }
      keys[slot]?.push(k);
      values[slot]?.push(v);
      positions[slot]?.push(pos);
    });
  });
  // Shuffle physical placement.
  for (let i = pending.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const a = pending[i];
    const b = pending[j];
    if (a && b) {
      pending[i] = b;
      pending[j] = a;
    }
  }
  for (const block of pending) {
    const list = block.quant ? quantBlocksList : fullBlocks;
    table[block.row * maxBlocks + block.index] = encodeBlockRef(block.quant ? 'quant' : 'full', list.length);
    list.push(block.words);
  }
  const concat = (blocks: Uint32Array[], words: number) => {
    const out = new Uint32Array(blocks.length * words);
    blocks.forEach((b, i) => out.set(b, i * words));
    return out;
  };
  const bindings: PagedCacheBindings = {
    blockTable: createStorageBuffer(gpu, 'table', table),
    contextLens: createStorageBuffer(gpu, 'ctx', contextLens),
    fullPool: createStorageBuffer(gpu, 'full', concat(fullBlocks, full.wordsPerBlock)),
    quantPool: createStorageBuffer(gpu, 'quant', concat(quantBlocksList, quant?.wordsPerBlock ?? 1)),
    seqSlots,
    maxBlocksPerHead: maxBlocks,
  };
  return {
    bindings,
    full,
    quant,
    keys,
    values,
    positions,
    destroy() {
      for (const b of [bindings.blockTable, bindings.contextLens, bindings.fullPool, bindings.quantPool]) b.destroy();
    },
  };
}
