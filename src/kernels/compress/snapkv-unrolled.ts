/**
 * WGSL of the SnapKV passes' inner products with the channel loop unrolled for one head dimension: every index
 * into a thread's query (pass 1) or key (pass 2) array is then a constant, so a compiler keeps the array in
 * registers (a loop-indexed private array lives in memory on SwiftShader, one gather per access). Both
 * functions sum over the vec4 channels in the same order, so both passes compute the same logit. Determined by
 * headDim alone, which is one of the kernels' constants (their pipeline cache key).
 *
 * @example
 * ```ts
 * const spec = { ..., libraries: [kvReadLibrary, snapkvUnrolledLse(128)] };
 * ```
 */
function lanes(headDim: number, v: number, read: (d: number) => string): string {
  return `vec4<f32>(${[0, 1, 2, 3].map((c) => (4 * v + c < headDim ? read(4 * v + c) : '0.0')).join(', ')})`;
}

function vecs(headDim: number): number[] {
  return Array.from({ length: Math.ceil(headDim / 4) }, (_, v) => v);
}

/** Pass 1: load_query(q_base) and key_dots4(q, k) = the logits (unscaled) of q with keys k..k+3 of key_tile. */
export function snapkvUnrolledLse(headDim: number): string {
  const vs = vecs(headDim);
  const load = vs.map((v) => `  q[${v}] = ${lanes(headDim, v, (d) => `window_q[q_base + ${d}u]`)};`).join('\n');
  const dots = vs
    .map((v) => `  acc += vec4<f32>(${[0, 1, 2, 3].map((c) => `dot(q[${v}], key_tile[(k + ${c}u) * VEC + ${v}u])`).join(', ')});`)
    .join('\n');
  return [
    `fn load_query(q_base: u32) -> array<vec4<f32>, VEC> {`,
    `  var q: array<vec4<f32>, VEC>;`,
    load,
    `  return q;`,
    `}`,
    `fn key_dots4(q: array<vec4<f32>, VEC>, k: u32) -> vec4<f32> {`,
    `  var acc = vec4<f32>(0.0);`,
    dots,
    `  return acc;`,
    `}`,
  ].join('\n');
}

/** Pass 2: load_key(entry, slot) and query_dots4(key, k) = the logits (unscaled) of pairs k..k+3 of q_tile. */
export function snapkvUnrolledScore(headDim: number): string {
  const vs = vecs(headDim);
  const load = vs.map((v) => `  key[${v}] = ${lanes(headDim, v, (d) => `kv_value(entry, slot, ${d}u, false)`)};`).join('\n');
  const dots = vs
    .map((v) => `  acc += vec4<f32>(${[0, 1, 2, 3].map((c) => `dot(q_tile[(k + ${c}u) * VEC + ${v}u], key[${v}])`).join(', ')});`)
    .join('\n');
  return [
    `fn load_key(entry: u32, slot: u32) -> array<vec4<f32>, VEC> {`,
    `  var key: array<vec4<f32>, VEC>;`,
    load,
    `  return key;`,
    `}`,
    `fn query_dots4(key: array<vec4<f32>, VEC>, k: u32) -> vec4<f32> {`,
    `  var acc = vec4<f32>(0.0);`,
    dots,
    `  return acc;`,
    `}`,
  ].join('\n');
}
