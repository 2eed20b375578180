/**
 * WGSL of the SnapKV passes' inner products, generated for one head dimension and one register block: a thread
 * of pass 1 holds `block` window queries and a thread of pass 2 holds `block` keys, all as values (a thread's
 * query or key array indexed by a loop counter would live in memory on SwiftShader, one gather per access), and
 * every key (pass 1) or query (pass 2) read from memory serves all of them. On SwiftShader, the CPU WebGPU these
 * benchmarks run on, a read from storage or workgroup memory costs a branch and a load per SIMD lane, as much as
 * several multiply-adds; reusing each one `block` times is what pays. Both passes build each logit with
 * `snapkv_logit` (channels summed in the same order), so pass 2 sees exactly the logit pass 1 normalised.
 * Determined by headDim, the block and the cache formats, all kernel constants (the pipeline cache key).
 *
 * @example
 * ```ts
 * const spec = { ..., libraries: [snapkvUnrolledLse(128, 4, snapkvKeyRead(128, true, false)), kvReadLibrary] };
 * ```
 */
function lanes(headDim: number, v: number, read: (d: number) => string): string {
  return `vec4<f32>(${[0, 1, 2, 3].map((c) => (4 * v + c < headDim ? read(4 * v + c) : '0.0')).join(', ')})`;
}

function vecs(headDim: number): number[] {
  return Array.from({ length: Math.ceil(headDim / 4) }, (_, v) => v);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * How keys are read: `words` when every key is f16 and headDim a multiple of 4 (two whole words per 4 channels,
 * one unpack2x16float each), `mixed` for f16 blocks that may sit beside quantized ones (words where the entry
 * is an f16 block), `general` otherwise (kv_value per channel). Follows the cache formats, which are kernel
 * constants (FULL_F16, HAS_QUANT): a path that cannot run is not generated, which also keeps SwiftShader's
 * compile time down.
 */
export type SnapKVKeyRead = 'words' | 'mixed' | 'general';

/** The key-read path for a cache's formats (see {@link SnapKVKeyRead}). */
export function snapkvKeyRead(headDim: number, fullF16: boolean, hasQuant: boolean): SnapKVKeyRead {
  if (!fullF16 || headDim % 4 !== 0) return 'general';
  return hasQuant ? 'mixed' : 'words';
}

/** Helpers both passes share: query and key loads and the logit. */
function common(headDim: number, keyRead: SnapKVKeyRead): string {
  const vs = vecs(headDim);
  const loadQuery = vs.map((v) => `  q[${v}] = ${lanes(headDim, v, (d) => `window_q[q_base + ${d}u]`)};`).join('\n');
  // An f16 block with headDim a multiple of 4 gives 4 channels as two whole words, one unpack2x16float each,
  // instead of four half-word reads.
  const wordPath =
    keyRead !== 'general'
      ? [
          `  if (!(HAS_QUANT && kv_is_quant(entry))) {`,
          `    let w = kv_block(entry) * FULL_WORDS_PER_BLOCK + slot * (HEAD_DIM / 2u);`,
          ...vs.map((v) => `    key[${v}] = vec4<f32>(unpack2x16float(full_pool[w + ${2 * v}u]), unpack2x16float(full_pool[w + ${2 * v + 1}u]));`),
          `    return key;`,
          `  }`,
        ]
      : [];
  // Per channel (quantized or unaligned keys) the read stays a loop: unrolled, its headDim inlined kv_value calls
  // took Chromium's SwiftShader (Subzero) 81 s to compile at headDim 128 against 11 s as a loop (peers page, 256
  // tokens); a loop-indexed write costs a store per channel, small beside kv_value's own decoding.
  const channel = (d: string) => (headDim % 4 === 0 ? `kv_value(entry, slot, ${d}, false)` : `key_channel(entry, slot, ${d})`);
  const loadKey = [
    `  for (var v = 0u; v < VEC; v++) {`,
    `    key[v] = vec4<f32>(${[0, 1, 2, 3].map((c) => channel(`4u * v + ${c}u`)).join(', ')});`,
    `  }`,
  ].join('\n');
  const keyChannel =
    headDim % 4 === 0
      ? []
      : [
          `fn key_channel(entry: u32, slot: u32, d: u32) -> f32 {`,
          `  if (d >= HEAD_DIM) { return 0.0; }`,
          `  return kv_value(entry, slot, d, false);`,
          `}`,
        ];
  const dots = vs.map((v) => `dot(q[${v}], k[${v}])`).join(' + ');
  return [
    `fn load_query(q_base: u32) -> array<vec4<f32>, VEC> {`,
    `  var q: array<vec4<f32>, VEC>;`,
    loadQuery,
    `  return q;`,
    `}`,
    ...keyChannel,
    `fn load_key(entry: u32, slot: u32) -> array<vec4<f32>, VEC> {`,
    `  var key: array<vec4<f32>, VEC>;`,
    ...wordPath,
    ...(keyRead === 'words' ? [] : [loadKey]),
    `  return key;`,
    `}`,
    `fn snapkv_logit(q: array<vec4<f32>, VEC>, k: array<vec4<f32>, VEC>) -> f32 {`,
    `  return (${dots}) * params.scale;`,
    `}`,
  ].join('\n');
}

/**
 * Pass 1: `struct PairQueries` (a thread's `block` queries q0.. and their positions p0..), `load_queries` and
 * `partition_states(queries, row, start, end, logit_base, logit_stride, valid)`: each query's online (max, Σ exp)
 * state over tokens start..end − 1. With `storeLogits` it also writes pair r's logit of token t (MASKED_LOGIT
 * where the query does not see it) to `logits[logit_base + t · logit_stride + r]` for r < valid, for pass 2.
 */
export function snapkvUnrolledLse(headDim: number, block: number, keyRead: SnapKVKeyRead, storeLogits = false): string {
  const rs = range(block);
  return [
    common(headDim, keyRead),
    `struct PairQueries {`,
    ...rs.map((r) => `  q${r}: array<vec4<f32>, VEC>,`),
    ...rs.map((r) => `  p${r}: u32,`),
    `}`,
    `fn load_queries(q_bases: array<u32, PAIR_BLOCK>, positions: array<u32, PAIR_BLOCK>) -> PairQueries {`,
    `  return PairQueries(${[...rs.map((r) => `load_query(q_bases[${r}])`), ...rs.map((r) => `positions[${r}]`)].join(', ')});`,
    `}`,
    `fn partition_states(qs: PairQueries, row: u32, start: u32, end: u32, logit_base: u32, logit_stride: u32, valid: u32) -> array<vec2<f32>, PAIR_BLOCK> {`,
    ...rs.map((r) => `  var m${r} = MASKED_LOGIT;\n  var s${r} = 0.0;`),
    `  for (var t = start; t < end; t++) {`,
    `    let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];`,
    `    let slot = t % BLOCK_SIZE;`,
    `    let pos = kv_position(entry, slot);`,
    `    let k = load_key(entry, slot);`,
    ...rs.flatMap((r) => [
      `    let l${r} = select(MASKED_LOGIT, snapkv_logit(qs.q${r}, k), pos <= qs.p${r});`,
      ...(storeLogits ? [`    if (${r}u < valid) { logits[logit_base + t * logit_stride + ${r}u] = l${r}; }`] : []),
      `    let n${r} = max(m${r}, l${r});`,
      `    s${r} = s${r} * exp(m${r} - n${r}) + select(0.0, exp(l${r} - n${r}), pos <= qs.p${r});`,
      `    m${r} = n${r};`,
    ]),
    `  }`,
    `  return array<vec2<f32>, PAIR_BLOCK>(${rs.map((r) => `vec2<f32>(m${r}, s${r})`).join(', ')});`,
    `}`,
  ].join('\n');
}

/**
 * Pass 2: `struct TokenKeys` (a thread's `block` keys k0.. and their positions p0.., 0xffffffff for none),
 * `load_keys(entries, slots, positions, tokens)` and `pair_step(keys, q_base, logit_at, logit_stride, norm, qpos,
 * acc)`: acc plus each key's probability under one pair. With `storedLogits` a key is its token index t0.., and a
 * pair's logits are read from `logits[logit_at + t · logit_stride]` (pass 1 wrote them) instead of recomputed:
 * one load per (pair, key) instead of a head_dim-long dot product, the same f32 logit either way.
 */
export function snapkvUnrolledScore(headDim: number, block: number, keyRead: SnapKVKeyRead, storedLogits = false): string {
  const rs = range(block);
  if (storedLogits) {
    return [
      `struct TokenKeys {`,
      ...rs.map((r) => `  t${r}: u32,`),
      ...rs.map((r) => `  p${r}: u32,`),
      `}`,
      `fn load_keys(entries: array<u32, TOKEN_BLOCK>, slots: array<u32, TOKEN_BLOCK>, positions: array<u32, TOKEN_BLOCK>, tokens: array<u32, TOKEN_BLOCK>) -> TokenKeys {`,
      `  return TokenKeys(${[...rs.map((r) => `tokens[${r}]`), ...rs.map((r) => `positions[${r}]`)].join(', ')});`,
      `}`,
      `fn pair_step(keys: TokenKeys, q_base: u32, logit_at: u32, logit_stride: u32, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
      `  return array<f32, TOKEN_BLOCK>(${rs
        .map((r) => `acc[${r}] + select(0.0, exp(logits[logit_at + keys.t${r} * logit_stride] - norm.x) * norm.y, keys.p${r} <= qpos)`)
        .join(', ')});`,
      `}`,
    ].join('\n');
  }
  return [
    common(headDim, keyRead),
    `struct TokenKeys {`,
    ...rs.map((r) => `  k${r}: array<vec4<f32>, VEC>,`),
    ...rs.map((r) => `  p${r}: u32,`),
    `}`,
    `fn load_keys(entries: array<u32, TOKEN_BLOCK>, slots: array<u32, TOKEN_BLOCK>, positions: array<u32, TOKEN_BLOCK>, tokens: array<u32, TOKEN_BLOCK>) -> TokenKeys {`,
    `  return TokenKeys(${[...rs.map((r) => `load_key(entries[${r}], slots[${r}])`), ...rs.map((r) => `positions[${r}]`)].join(', ')});`,
    `}`,
    `fn pair_masses(keys: TokenKeys, q: array<vec4<f32>, VEC>, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
    `  return array<f32, TOKEN_BLOCK>(${rs
      .map((r) => `acc[${r}] + select(0.0, exp(snapkv_logit(q, keys.k${r}) - norm.x) * norm.y, keys.p${r} <= qpos)`)
      .join(', ')});`,
    `}`,
    `fn pair_step(keys: TokenKeys, q_base: u32, logit_at: u32, logit_stride: u32, norm: vec2<f32>, qpos: u32, acc: array<f32, TOKEN_BLOCK>) -> array<f32, TOKEN_BLOCK> {`,
    `  return pair_masses(keys, load_query(q_base), norm, qpos, acc);`,
    `}`,
  ].join('\n');
}

/**
 * `first_token(row)`: the first token of a cache row the window scoring sees. With `skipsLeading` it reads
 * `first_tokens[row]` (merge slots: a row's slots lead it and take no part in the window softmax or the pooling,
 * as on the CPU engine), else 0 — and the variant without it binds no such buffer.
 */
export function snapkvFirstToken(skipsLeading: boolean): string {
  return `fn first_token(row: u32) -> u32 {\n  return ${skipsLeading ? 'first_tokens[row]' : '0u'};\n}`;
}
