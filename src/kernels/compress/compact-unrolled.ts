import type { BlockLayout } from '../../format/layout.js';

/**
 * Whether shaders/compact_blocks.wgsl quantizes this layout by whole-word items (its QUANT_WHOLE_WORDS): a code
 * word never spans two tokens, G is a multiple of 4, and a V item of max(G, values per word) channels holds
 * whole groups and whole words.
 *
 * @example
 * ```ts
 * quantizesByItem(blockLayout('int4', { headDim: 128, blockSize: 16 })); // true
 * quantizesByItem(blockLayout('int2', { headDim: 8, blockSize: 16 }));   // false: a word spans two tokens
 * ```
 */
export function quantizesByItem(layout: BlockLayout): boolean {
  const perWord = 32 / layout.bits;
  const g = layout.groupSize;
  return layout.headDim % perWord === 0 && g % 4 === 0 && (g % perWord === 0 || perWord % g === 0);
}

/**
 * Whether shaders/compact_k_quad.wgsl can quantize this layout's K items (4 lanes × 4 tokens of a group of 16,
 * whole 8-channel octets): by item, G 16, head_dim a multiple of 8.
 *
 * @example
 * ```ts
 * quantizesByQuad(blockLayout('int2', { headDim: 128, blockSize: 16 })); // true
 * ```
 */
export function quantizesByQuad(layout: BlockLayout): boolean {
  return quantizesByItem(layout) && layout.groupSize === 16 && layout.headDim % 8 === 0;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * WGSL of compact_blocks' whole-word V item, `quantize_v_item(base, t, c0)`, with its loops unrolled for one
 * quantized layout: filled token t, channels c0 … c0 + max(G, values per word) − 1, its parameter words and code
 * words. Each value is read from its source once and stays in registers between the min/max and the codes:
 * on SwiftShader a loop pays per iteration for every variable it carries, and a re-read pays the whole source
 * path again; this took the V half about 2× faster than the loop (bench --only quantize). (Unrolling the K
 * item the same way, a whole token group's values live at once, was slower there: it spills.) Determined by
 * the layout's head_dim, group size and bits, which are kernel constants (part of the pipeline cache key). For
 * layouts that {@link quantizesByItem} rejects, and without a quantized pool, it is a stub the kernel never calls.
 *
 * @example
 * ```ts
 * const spec = { ..., libraries: [kvReadLibrary, compactUnrolled(quantLayout)] };
 * ```
 */
export function compactUnrolled(layout: BlockLayout | null): string {
  if (!layout || !quantizesByItem(layout)) {
    return 'fn quantize_v_item(base: u32, t: u32, c0: u32) {}';
  }
  return vItem(layout);
}

/**
 * WGSL declaring compact_blocks' full pool (binding 4) and the two functions the body reaches it through for
 * whole-row work, `store_full(i, word)` and `full_row_words(i)` (words 4i … 4i + 3). For any destinations the
 * pool is read_write; with `quantDestinations` (every job writes a quantized block) it is read-only and a second
 * read-only view of the same buffer, `full_rows: array<vec4<u32>>` at binding 7, serves full_row_words with one
 * vec4 load: on SwiftShader a storage load costs about the same whatever its width (a vec4 copy moved the same
 * bytes 2.2× faster than the u32 copy kernel), and WebGPU forbids binding one buffer read_write and read-only in
 * one dispatch. That variant's store_full does nothing (it never builds a full destination).
 *
 * @example
 * ```ts
 * const spec = { ..., libraries: [kvReadLibrary, compactBindings(true), compactUnrolled(quantLayout)] };
 * ```
 */
export function compactBindings(quantDestinations: boolean): string {
  if (quantDestinations) {
    return [
      '@group(0) @binding(4) var<storage, read> full_pool: array<u32>;',
      '@group(0) @binding(7) var<storage, read> full_rows: array<vec4<u32>>;',
      'fn store_full(i: u32, word: u32) {}',
      'fn full_row_words(i: u32) -> vec4<u32> { return full_rows[i]; }',
    ].join('\n');
  }
  return [
    '@group(0) @binding(4) var<storage, read_write> full_pool: array<u32>;',
    'fn store_full(i: u32, word: u32) { full_pool[i] = word; }',
    'fn full_row_words(i: u32) -> vec4<u32> { return vec4<u32>(full_pool[4u * i], full_pool[4u * i + 1u], full_pool[4u * i + 2u], full_pool[4u * i + 3u]); }',
  ].join('\n');
}

function vItem(layout: BlockLayout): string {
  const g = layout.groupSize;
  const perWord = 32 / layout.bits;
  const span = Math.max(g, perWord);
  const quadsPerGroup = g / 4;
  const lines = ['fn quantize_v_item(base: u32, t: u32, c0: u32) {'];
  const codes: string[][] = range(span / perWord).map(() => []);
  for (const group of range(span / g)) {
    const quads = range(quadsPerGroup).map((q) => `x${group}_${q}`);
    // Quad pairs come as octets (one vec4 load of f16 where the kernel binds full_rows).
    range(quadsPerGroup).forEach((q) => {
      const channel = group * g + 4 * q;
      if (quadsPerGroup % 2 !== 0) {
        lines.push(`  let x${group}_${q} = row_quad(t, c0 + ${channel}u, true);`);
      } else if (q % 2 === 0) {
        lines.push(`  let o${group}_${q} = row_oct(t, c0 + ${channel}u, true);`);
        lines.push(`  let x${group}_${q} = o${group}_${q}.lo;`);
        lines.push(`  let x${group}_${q + 1} = o${group}_${q}.hi;`);
      }
    });
    lines.push(`  let lo${group} = ${tree('min', quads)};`);
    lines.push(`  let hi${group} = ${tree('max', quads)};`);
    lines.push(
      `  let p${group} = param_word(min(min(lo${group}.x, lo${group}.y), min(lo${group}.z, lo${group}.w)), ` +
        `max(max(hi${group}.x, hi${group}.y), max(hi${group}.z, hi${group}.w)));`,
    );
    lines.push(`  quant_pool[base + QUANT_VP_OFFSET + t * GROUPS_PER_TOKEN + c0 / QUANT_GROUP + ${group}u] = p${group};`);
    lines.push(`  let sz${group} = unpack2x16float(p${group});`);
    lines.push(`  let k${group} = coder(vec4<f32>(sz${group}.x), vec4<f32>(sz${group}.y));`);
    range(quadsPerGroup).forEach((q) => {
      const channel = group * g + 4 * q;
      const shift = (channel % perWord) * layout.bits;
      const code = `quad_codes(x${group}_${q}, k${group})`;
      codes[Math.floor(channel / perWord)]?.push(shift === 0 ? code : `(${code} << ${shift}u)`);
    });
  }
  codes.forEach((parts, w) => {
    lines.push(`  quant_pool[base + QUANT_V_OFFSET + (t * HEAD_DIM + c0) / VALUES_PER_WORD + ${w}u] = ${parts.join(' | ')};`);
  });
  lines.push('}');
  return lines.join('\n');
}

/** A balanced reduction `op(op(a, b), op(c, d))…` of the expressions. */
function tree(op: string, items: string[]): string {
  if (items.length === 1) return items[0] ?? '';
  const half = Math.ceil(items.length / 2);
  return `${op}(${tree(op, items.slice(0, half))}, ${tree(op, items.slice(half))})`;
}
