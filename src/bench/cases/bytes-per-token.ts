import { baselineF16Bytes, type BlockFormat, blockLayout, bytesPerBlock, type CacheShape } from '../../format/layout.js';
import type { BenchSuite, BenchTable } from '../harness.js';
import { trimNumber } from '../units.js';

const FORMATS: readonly BlockFormat[] = ['f32', 'f16', 'int8', 'int4', 'int2'];

/**
 * Bytes per token of each block format for a cache shape, against the f16 baseline (K and V at 2 bytes per value,
 * no positions, no parameters, no padding): pure layout arithmetic, no GPU.
 *
 * @example
 * ```ts
 * const table = bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 128, blockSize: 16 });
 * table.rows[3]; // ['int4', 128, 16, 16, 3136, '196', '6272', '16384', '0.383', '2.61']
 * ```
 */
export function bytesPerTokenTable(shape: CacheShape): BenchTable {
  const tokens = 1_000_000;
  const baselinePerToken = baselineF16Bytes(shape, tokens) / tokens;
  const rows = FORMATS.map((format) => {
    const layout = blockLayout(format, shape);
    const perHead = bytesPerBlock(layout) / layout.blockSize;
    const perToken = perHead * shape.layers * shape.kvHeads;
    return [
      format,
      shape.headDim,
      shape.blockSize,
      layout.format === 'f32' || layout.format === 'f16' ? '—' : layout.groupSize,
      bytesPerBlock(layout),
      trimNumber(perHead, 4),
      trimNumber(perToken, 5),
      trimNumber(baselinePerToken, 5),
      trimNumber(perToken / baselinePerToken, 3),
      trimNumber(baselinePerToken / perToken, 3),
    ];
  });
  return {
    title: `Bytes per token, ${shape.layers} layers × ${shape.kvHeads} KV heads × head_dim ${shape.headDim}, block ${shape.blockSize}`,
    columns: [
      'format',
      'head_dim',
      'block',
      'group',
      'bytes/block',
      'bytes/token/head',
      'bytes/token (all layers, heads)',
      'f16 baseline bytes/token',
      'size vs f16',
      'compression vs f16',
    ],
    rows,
    note:
      'bytes/block counts K, V, quantization parameters (one f16 scale + zero word per group) and positions (one u32 ' +
      'per slot), in full blocks; the baseline is baselineF16Bytes(): K and V at 2 bytes per value and nothing else. ' +
      'size vs f16 = bytes/token ÷ baseline (smaller is better); compression = its inverse.',
  };
}

/**
 * The bytes-per-token tables for head_dim 128 (the issues' shape) and 8 (the tiny test model), block 16.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(null, [bytesPerTokenSuite], benchSettings(true)); // no GPU needed
 * ```
 */
export const bytesPerTokenSuite: BenchSuite = {
  name: 'bytes-per-token',
  description: 'bytes per token per block format against the f16 baseline (layout arithmetic, no timing)',
  tables: () => [
    bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 128, blockSize: 16 }),
    bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 8, blockSize: 16 }),
  ],
};
