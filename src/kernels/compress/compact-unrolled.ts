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

function vItem(layout: BlockLayout): string {
  const g = layout.groupSize;
  const perWord = 32 / layout.bits;
  const span = Math.max(g, perWord);
  const quadsPerGroup = g / 4;
  const lines = ['fn quantize_v_item(base: u32, t: u32, c0: u32) {'];
  const codes: string[][] = range(span / perWord).map(() => []);
  for (const group of range(span / g)) {
    const quads = range(quadsPerGroup).map((q) => `x${group}_${q}`);
    range(quadsPerGroup).forEach((q) => {
      lines.push(`  let x${group}_${q} = row_quad(t, c0 + ${group * g + 4 * q}u, true);`);
    });
    lines.push(`  let lo${group} = ${tree('min', quads)};`);
    lines.push(`  let hi${group} = ${tree('max', quads)};`);
    lines.push(
      `  let p${group} = param_word(min(min(lo${group}.x, lo${group}.y), min(lo${group}.z, lo${group}.w)), ` +
        `max(max(hi${group}.x, hi${group}.y), max(hi${group}.z, hi${group}.w)));`,
    );
    lines.push(`  quant_pool[base + QUANT_VP_OFFSET + t * GROUPS_PER_TOKEN + c0 / QUANT_GROUP + ${group}u] = p${group};`);
    lines.push(`  let sz${group} = unpack2x16float(p${group});`);
    range(quadsPerGroup).forEach((q) => {
      const channel = group * g + 4 * q;
      const shift = (channel % perWord) * layout.bits;
      const code = `quad_codes(x${group}_${q}, vec4<f32>(sz${group}.x), vec4<f32>(sz${group}.y))`;
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
