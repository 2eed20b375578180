// Split-context paged attention, first pass ("flash-decoding", as vLLM's paged_attention_v2 and FlashInfer):
// one workgroup per (query tile, KV head, context partition) serves every query head of the KV head's GQA group
// (and, for prefill, QUERY_TILE consecutive queries of one sequence), so each K/V word is read once per group
// instead of once per query head. The partition is walked in chunks of CHUNK_TOKENS with an online softmax;
// logits live in workgroup memory. Output per (query, head, partition): the unnormalised V mix and (max, sum) of
// its exponentials, in one scratch binding (`partials`); shaders/flash_decode_merge.wgsl combines partitions by
// log-sum-exp.
//
// Pools are bound as vec4 words so that a full block's 8 channels come in one 16-byte load; the host checks
// that blocks and their K/V regions start on 16-byte boundaries. Quantized blocks: the K scale/zero of a chunk's
// groups is staged in workgroup memory once (not read per token), codes come as whole words, and the V scale
// is folded into p (acc += (p·s)·code, with Σ p·z kept apart), which saves the per-channel dequantisation.
//
// Decode (ROW_VECTOR): the thread that computes a token's logits also takes its exponential against the chunk's
// maximum, found by workgroup_max_rows, and keeps its share of the softmax sum until workgroup_sum_rows after the
// last chunk. Those two come from shaders/flash_decode_reduce_subgroup.wgsl (subgroupMax / subgroupAdd) where the
// device has subgroups, else from shaders/flash_decode_reduce_workgroup.wgsl; the host picks (SUBGROUPS).

@group(0) @binding(0) var<uniform> params: FlashParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;          // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> query_slot: array<u32>;       // [n]
@group(0) @binding(3) var<storage, read> query_pos: array<u32>;        // [n]
@group(0) @binding(4) var<storage, read> block_table: array<u32>;      // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;     // [layers][slots][kv_heads]
@group(0) @binding(6) var<storage, read> full_pool: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> quant_pool: array<vec4<u32>>;
// The same buffer as single words: codes of one octet are one word (int4) or part of one, and picking a lane of
// a vec4 by a per-thread index costs SwiftShader more than a scalar load.
@group(0) @binding(9) var<storage, read> quant_words: array<u32>;
@group(0) @binding(10) var<storage, read> full_words: array<u32>;
// Every output of the run in one binding, so that a stage stays within the 10 storage buffers Chrome allows
// (src/kernels/cache/flash-decode.ts, `partialsLayout`): the unnormalised V mixes [n][N_HEADS][partitions][HEAD_DIM],
// then (max, Σ) pairs [n][N_HEADS][partitions], then the merge pass's (max, Σ) per (query, head), then the query
// positions as bits (written here, by the workgroups of KV head 0 and partition 0, for the statistics pass).
@group(0) @binding(8) var<storage, read_write> partials: array<f32>;

const GROUP: u32 = N_HEADS / KV_HEADS;
const ROWS: u32 = QUERY_TILE * GROUP;
const OCTETS: u32 = HEAD_DIM / 8u;
const LANES: u32 = min(OCTETS, WORKGROUP_SIZE);
const OCTETS_PER_LANE: u32 = (OCTETS + LANES - 1u) / LANES;
const PARTS: u32 = WORKGROUP_SIZE / LANES;
const TOKENS_PER_THREAD: u32 = CHUNK_TOKENS / WORKGROUP_SIZE;
const TOKENS_PER_PART: u32 = CHUNK_TOKENS / PARTS;
const QUADS: u32 = HEAD_DIM / 4u;
// Up to four rows and one octet per lane (decode with GQA ≤ 4): the V mix keeps one vec4 per channel with the
// rows as components, in named registers. SwiftShader does not unroll the per-row loops of the general path, so
// there its indexed accumulators live in memory; real GPUs unroll both.
const ROW_VECTOR: bool = ROWS <= 4u && OCTETS_PER_LANE == 1u;
// A token's K codes as 16-byte words (one load for 2, 4 or 8 octets) when its row fills whole such words.
const K_CODE_WORDS: bool = (HEAD_DIM * QUANT_BITS) % 128u == 0u;
const OCTETS_PER_WORDS: u32 = 16u / QUANT_BITS;
const K_ZERO_BASE: u32 = K_GROUPS_PER_CHUNK * QUADS;
const K_GROUPS_PER_CHUNK: u32 = CHUNK_TOKENS / QUANT_GROUP;
const QUANT_POOL_BIT: u32 = 0x80000000u;
const MASKED_LOGIT: f32 = -3.0e38f;
const CODE_BIAS: f32 = 1024.0;
const CODE_BIAS_BITS: u32 = 0x64006400u;
// ROW_VECTOR with FOLD_K_SCALE: threads per K group that stage its q·scale and post partial sums of q·zero; a
// token's logit adds its group's ZERO_PARTS partials (a few loads instead of a serial loop over the channels).
// Steps of a quantized token's K logits in quant_k_step.
const K_QUANT_STEPS: u32 = select(
  select(OCTETS, HEAD_DIM * QUANT_BITS / 128u, FOLD_K_SCALE && K_CODE_WORDS),
  OCTETS,
  FOLD_K_SCALE && QUANT_BITS == 4u,
);
const ZERO_PARTS: u32 = clamp(WORKGROUP_SIZE / K_GROUPS_PER_CHUNK, 1u, 4u);
// ROW_VECTOR, int4 with the K scale folded, a multiple of four tokens per thread inside one K group and block: a
// thread owns consecutive tokens of the chunk (owned_token) and takes their K logits four at a time, so each
// staged q·scale load serves four tokens. On SwiftShader (16 threads, 64-token chunks, KIVI groups of 16) those
// loads, not the FMAs, were the larger part of an int4 token's K cost (one token at a time: int4 1.2–1.3× the f16
// CPU time; four: 1.0–1.05×). With one token per thread (the hardware default) the old loop runs.
const K_TOKEN_QUADS: bool = ROW_VECTOR && FOLD_K_SCALE && QUANT_BITS == 4u && HAS_QUANT && TOKENS_PER_THREAD % 4u == 0u &&
  QUANT_GROUP % TOKENS_PER_THREAD == 0u && BLOCK_SIZE % TOKENS_PER_THREAD == 0u;

var<workgroup> q_shared: array<vec4<f32>, ROWS * HEAD_DIM / 4u>;
var<workgroup> logits: array<f32, ROWS * CHUNK_TOKENS>;
var<workgroup> alpha_shared: array<f32, ROWS>;
var<workgroup> qpos_shared: array<u32, QUERY_TILE>;
// One buffer, three uses. Per chunk, with FOLD_K_SCALE: q·scale of every (K group, row) [g][r][HEAD_DIM/4] ([g][c]
// row vectors with ROW_VECTOR); without
// it: the K scales [g][HEAD_DIM/4], then the zeros. After the last chunk: the parts' V mixes [part][r][HEAD_DIM/4].
var<workgroup> scratch: array<vec4<f32>, SCRATCH_VECTORS>;
// With FOLD_K_SCALE: Σ_c q_c·zero_c of every (K group, row), the part of a logit that no code multiplies.
var<workgroup> q_zero: array<f32, Q_ZERO_SLOTS>;
var<workgroup> len_shared: u32;
// ROW_VECTOR: q channel-major, q_rows[c] = channel c of rows 0 … 3 (zero past ROWS); with FOLD_K_SCALE,
// q·zero of every K group of the chunk likewise (scratch then holds q·scale as [g][c] row vectors).
var<workgroup> q_rows: array<vec4<f32>, select(1u, HEAD_DIM, ROW_VECTOR)>;
var<workgroup> q_zero_rows: array<vec4<f32>, select(1u, K_GROUPS_PER_CHUNK * ZERO_PARTS, ROW_VECTOR && FOLD_K_SCALE && HAS_QUANT)>;
// The row reductions' exchange (see the reduce libraries).
var<workgroup> reduce_shared: array<vec4<f32>, select(1u, WORKGROUP_SIZE, ROW_VECTOR)>;
var<workgroup> reduce_result: vec4<f32>;

// Where the (max, Σ) pairs and the query positions start in `partials`.
fn ml_base() -> u32 {
  return params.num_queries * N_HEADS * params.partitions * HEAD_DIM;
}

fn qpos_base() -> u32 {
  return ml_base() + params.num_queries * N_HEADS * (params.partitions + 1u) * 2u;
}

fn full_word(i: u32) -> u32 {
  return full_words[i];
}

fn quant_word(i: u32) -> u32 {
  return quant_words[i];
}

fn is_quant(entry: u32) -> bool {
  return HAS_QUANT && (entry & QUANT_POOL_BIT) != 0u;
}

fn token_position(entry: u32, slot: u32) -> u32 {
  let block = entry & 0x7fffffffu;
  if (is_quant(entry)) {
    return quant_word(block * QUANT_WORDS_PER_BLOCK + QUANT_POS_OFFSET + slot);
  }
  return full_word(block * FULL_WORDS_PER_BLOCK + FULL_POS_OFFSET + slot);
}

// Eight consecutive channels (octet o) of token `slot` of a full block, K (v_part false) or V.
fn full_octet(block: u32, slot: u32, o: u32, v_part: bool) -> array<vec4<f32>, 2> {
  let base = block * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part);
  if (FULL_F16) {
    let w = full_pool[(base + slot * (HEAD_DIM / 2u) + o * 4u) >> 2u];
    return array<vec4<f32>, 2>(
      vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)),
      vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)),
    );
  }
  let i = (base + slot * HEAD_DIM + o * 8u) >> 2u;
  return array<vec4<f32>, 2>(bitcast<vec4<f32>>(full_pool[i]), bitcast<vec4<f32>>(full_pool[i + 1u]));
}

// The eight codes of octet o of token `slot` of a quantized block, each plus CODE_BIAS, as floats. Two codes at
// a time are placed in the mantissas of an f16 pair whose exponent makes the mantissa's last bit worth 1
// (0x6400 = 1024.0), so one unpack2x16float converts two codes: cheaper than shift, mask and convert per code.
fn quant_octet_codes(block: u32, slot: u32, o: u32, v_part: bool) -> array<vec4<f32>, 2> {
  let base = block * QUANT_WORDS_PER_BLOCK + select(0u, QUANT_V_OFFSET, v_part);
  let bit = (slot * HEAD_DIM + o * 8u) * QUANT_BITS;
  let word = quant_word(base + bit / 32u);
  var next = 0u;
  if (QUANT_BITS == 8u) {
    next = quant_word(base + bit / 32u + 1u);
  }
  return codes_of_words(word, next, bit % 32u);
}

// Codes 0 … 3 and 4 … 7 of an int4 word. Converted as signed integers (they are below 16): a signed conversion
// is one SIMD instruction on x86, an unsigned one several.
fn int4_low(word: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(word) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)));
}

fn int4_high(word: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(word) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)));
}

// Step w of a quantized token's K logits for rows 0 … 3 (ROW_VECTOR), K group g of the chunk, the K scale folded
// into q: int4, word w (8 codes, unpacked by shifts); other widths with K_CODE_WORDS, 16 bytes of codes. Without
// the fold, octet w dequantised with the staged scale and zero. int4 goes a word at a time because SwiftShader
// ran that loop faster (about 1.35× the f16 time against 1.5× for 16 bytes at a time, whose body is 4× larger).
fn quant_k_step(block: u32, s: u32, g: u32, w: u32) -> vec4<f32> {
  if (FOLD_K_SCALE && QUANT_BITS == 4u) {
    let word = quant_word(block * QUANT_WORDS_PER_BLOCK + s * (HEAD_DIM / 8u) + w);
    return dot_scaled_rows(g * HEAD_DIM + w * 8u, int4_low(word), int4_high(word));
  }
  if (FOLD_K_SCALE && K_CODE_WORDS) {
    let words = quant_pool[(block * QUANT_WORDS_PER_BLOCK + s * (HEAD_DIM * QUANT_BITS / 32u)) / 4u + w];
    return dot_code_words(words, g, w * OCTETS_PER_WORDS);
  }
  let codes = quant_octet_codes(block, s, w, false);
  if (FOLD_K_SCALE) {
    // Unbiased: the bias times q·scale would cancel against q·zero in f32.
    return dot_scaled_rows(g * HEAD_DIM + w * 8u, codes[0] - CODE_BIAS, codes[1] - CODE_BIAS);
  }
  let p0 = g * QUADS + w * 2u;
  let k0 = fma(codes[0], scratch[p0], scratch[K_ZERO_BASE + p0]);
  let k1 = fma(codes[1], scratch[p0 + 1u], scratch[K_ZERO_BASE + p0 + 1u]);
  return dot_q_rows(w * 8u, k0, k1);
}

// The word holding octet o of token `slot` of an int4 block (8 codes of 4 bits).
fn int4_octet_word(block: u32, slot: u32, o: u32, v_part: bool) -> u32 {
  return quant_word(block * QUANT_WORDS_PER_BLOCK + select(0u, QUANT_V_OFFSET, v_part) + slot * (HEAD_DIM / 8u) + o);
}

// The eight codes (plus CODE_BIAS) that start at bit `shift` of `word` (int8: `word` then `next`).
fn codes_of_words(word: u32, next: u32, shift: u32) -> array<vec4<f32>, 2> {
  if (QUANT_BITS == 8u) {
    let a = unpack2x16float((word & 0x00ff00ffu) | CODE_BIAS_BITS);
    let b = unpack2x16float(((word >> 8u) & 0x00ff00ffu) | CODE_BIAS_BITS);
    let c = unpack2x16float((next & 0x00ff00ffu) | CODE_BIAS_BITS);
    let d = unpack2x16float(((next >> 8u) & 0x00ff00ffu) | CODE_BIAS_BITS);
    return array<vec4<f32>, 2>(vec4<f32>(a.x, b.x, a.y, b.y), vec4<f32>(c.x, d.x, c.y, d.y));
  }
  var x = word; // int4: codes 0..3 in the low half, 4..7 in the high half
  var mask = 0x000f000fu;
  if (QUANT_BITS == 2u) {
    let h = word >> shift;
    x = (h & 0xffu) | ((h & 0xff00u) << 8u);
    mask = 0x00030003u;
  }
  let p0 = unpack2x16float((x & mask) | CODE_BIAS_BITS);
  let p1 = unpack2x16float(((x >> QUANT_BITS) & mask) | CODE_BIAS_BITS);
  let p2 = unpack2x16float(((x >> (2u * QUANT_BITS)) & mask) | CODE_BIAS_BITS);
  let p3 = unpack2x16float(((x >> (3u * QUANT_BITS)) & mask) | CODE_BIAS_BITS);
  return array<vec4<f32>, 2>(vec4<f32>(p0.x, p1.x, p2.x, p3.x), vec4<f32>(p0.y, p1.y, p2.y, p3.y));
}

// Σ over the 8·OCTETS_PER_WORDS channels of one 16-byte word of K codes, with q·scale of group g: d += …
fn dot_code_words(words: vec4<u32>, g: u32, first_octet: u32) -> vec4<f32> {
  var d = vec4<f32>(0.0);
  for (var j = 0u; j < OCTETS_PER_WORDS; j++) {
    var codes: array<vec4<f32>, 2>;
    if (QUANT_BITS == 8u) {
      codes = codes_of_words(words[2u * j], words[2u * j + 1u], 0u);
    } else if (QUANT_BITS == 4u) {
      codes = codes_of_words(words[j], 0u, 0u);
    } else {
      codes = codes_of_words(words[j / 2u], 0u, (j % 2u) * 16u);
    }
    // Unbiased: the bias times q·scale would cancel against q·zero in f32.
    d += dot_scaled_rows(g * HEAD_DIM + (first_octet + j) * 8u, codes[0] - CODE_BIAS, codes[1] - CODE_BIAS);
  }
  return d;
}

// Σ over channels c0 … c0+7 of k_c · q_c for rows 0 … 3 (ROW_VECTOR), q from q_rows.
fn dot_q_rows(c0: u32, k0: vec4<f32>, k1: vec4<f32>) -> vec4<f32> {
  var d = k0.x * q_rows[c0];
  d = fma(vec4<f32>(k0.y), q_rows[c0 + 1u], d);
  d = fma(vec4<f32>(k0.z), q_rows[c0 + 2u], d);
  d = fma(vec4<f32>(k0.w), q_rows[c0 + 3u], d);
  d = fma(vec4<f32>(k1.x), q_rows[c0 + 4u], d);
  d = fma(vec4<f32>(k1.y), q_rows[c0 + 5u], d);
  d = fma(vec4<f32>(k1.z), q_rows[c0 + 6u], d);
  d = fma(vec4<f32>(k1.w), q_rows[c0 + 7u], d);
  return d;
}

// The same with q·scale of the staged K group: scratch[base + j] for channel j of the octet.
fn dot_scaled_rows(base: u32, k0: vec4<f32>, k1: vec4<f32>) -> vec4<f32> {
  var d = k0.x * scratch[base];
  d = fma(vec4<f32>(k0.y), scratch[base + 1u], d);
  d = fma(vec4<f32>(k0.z), scratch[base + 2u], d);
  d = fma(vec4<f32>(k0.w), scratch[base + 3u], d);
  d = fma(vec4<f32>(k1.x), scratch[base + 4u], d);
  d = fma(vec4<f32>(k1.y), scratch[base + 5u], d);
  d = fma(vec4<f32>(k1.z), scratch[base + 6u], d);
  d = fma(vec4<f32>(k1.w), scratch[base + 7u], d);
  return d;
}

// dot_scaled_rows for four tokens of one K group at once, from their int4 code words a, b, c and e: one load of
// each staged q·scale serves the four.
fn dot_scaled_quad(base: u32, a: u32, b: u32, c: u32, e: u32) -> array<vec4<f32>, 4> {
  let a0 = int4_low(a);
  let a1 = int4_high(a);
  let b0 = int4_low(b);
  let b1 = int4_high(b);
  let c0 = int4_low(c);
  let c1 = int4_high(c);
  let e0 = int4_low(e);
  let e1 = int4_high(e);
  var q = scratch[base];
  var da = a0.x * q;
  var db = b0.x * q;
  var dc = c0.x * q;
  var de = e0.x * q;
  q = scratch[base + 1u];
  da = fma(vec4<f32>(a0.y), q, da);
  db = fma(vec4<f32>(b0.y), q, db);
  dc = fma(vec4<f32>(c0.y), q, dc);
  de = fma(vec4<f32>(e0.y), q, de);
  q = scratch[base + 2u];
  da = fma(vec4<f32>(a0.z), q, da);
  db = fma(vec4<f32>(b0.z), q, db);
  dc = fma(vec4<f32>(c0.z), q, dc);
  de = fma(vec4<f32>(e0.z), q, de);
  q = scratch[base + 3u];
  da = fma(vec4<f32>(a0.w), q, da);
  db = fma(vec4<f32>(b0.w), q, db);
  dc = fma(vec4<f32>(c0.w), q, dc);
  de = fma(vec4<f32>(e0.w), q, de);
  q = scratch[base + 4u];
  da = fma(vec4<f32>(a1.x), q, da);
  db = fma(vec4<f32>(b1.x), q, db);
  dc = fma(vec4<f32>(c1.x), q, dc);
  de = fma(vec4<f32>(e1.x), q, de);
  q = scratch[base + 5u];
  da = fma(vec4<f32>(a1.y), q, da);
  db = fma(vec4<f32>(b1.y), q, db);
  dc = fma(vec4<f32>(c1.y), q, dc);
  de = fma(vec4<f32>(e1.y), q, de);
  q = scratch[base + 6u];
  da = fma(vec4<f32>(a1.z), q, da);
  db = fma(vec4<f32>(b1.z), q, db);
  dc = fma(vec4<f32>(c1.z), q, dc);
  de = fma(vec4<f32>(e1.z), q, de);
  q = scratch[base + 7u];
  da = fma(vec4<f32>(a1.w), q, da);
  db = fma(vec4<f32>(b1.w), q, db);
  dc = fma(vec4<f32>(c1.w), q, dc);
  de = fma(vec4<f32>(e1.w), q, de);
  return array<vec4<f32>, 4>(da, db, dc, de);
}

// The logits of token tl (slot s of the block of `entry`) for rows 0 … 3, masked by position; nothing when absent.
fn store_quad_logit(tl: u32, d: vec4<f32>, entry: u32, s: u32, present: bool) {
  if (present) {
    let masked = select(vec4<f32>(MASKED_LOGIT), d, rows_visible(true, token_position(entry, s)));
    for (var r = 0u; r < ROWS; r++) {
      logits[r * CHUNK_TOKENS + tl] = masked[r];
    }
  }
}

// Token k of this thread's share of a chunk (ROW_VECTOR): consecutive tokens with K_TOKEN_QUADS, else strided
// by the workgroup, so that neighbouring threads write neighbouring logits.
fn owned_token(lid: u32, k: u32) -> u32 {
  return select(lid + k * WORKGROUP_SIZE, lid * TOKENS_PER_THREAD + k, K_TOKEN_QUADS);
}

// Probabilities of token tl of the chunk for rows 0 … 3 (0 past ROWS).
fn row_probs(tl: u32) -> vec4<f32> {
  return vec4<f32>(
    logits[tl],
    select(0.0, logits[min(1u, ROWS - 1u) * CHUNK_TOKENS + tl], ROWS > 1u),
    select(0.0, logits[min(2u, ROWS - 1u) * CHUNK_TOKENS + tl], ROWS > 2u),
    select(0.0, logits[min(3u, ROWS - 1u) * CHUNK_TOKENS + tl], ROWS > 3u),
  );
}

// (scale, zero) of channels 4·c4 … 4·c4+3 of K group g of the chunk; (0, 0) past the head's end or in a full block.
fn k_group_params(chunk: u32, end: u32, table_base: u32, g: u32, c4: u32) -> array<vec4<f32>, 2> {
  let t = chunk + g * QUANT_GROUP;
  if (t >= end) {
    return array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
  }
  let entry = block_table[table_base + t / BLOCK_SIZE];
  if (!is_quant(entry)) {
    return array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
  }
  let block = entry & 0x7fffffffu;
  let word = block * QUANT_WORDS_PER_BLOCK + QUANT_KP_OFFSET + ((t % BLOCK_SIZE) / QUANT_GROUP) * HEAD_DIM + c4 * 4u;
  let w = quant_pool[word >> 2u];
  let a = unpack2x16float(w.x);
  let b = unpack2x16float(w.y);
  let c = unpack2x16float(w.z);
  let d = unpack2x16float(w.w);
  return array<vec4<f32>, 2>(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}

// First word of the K scale/zero row of group g of the chunk, or none (past the head's end or a full block).
fn k_group_words(chunk: u32, end: u32, table_base: u32, g: u32) -> u32 {
  let t = chunk + g * QUANT_GROUP;
  if (t >= end) {
    return 0xffffffffu;
  }
  let entry = block_table[table_base + t / BLOCK_SIZE];
  if (!is_quant(entry)) {
    return 0xffffffffu;
  }
  return (entry & 0x7fffffffu) * QUANT_WORDS_PER_BLOCK + QUANT_KP_OFFSET + ((t % BLOCK_SIZE) / QUANT_GROUP) * HEAD_DIM;
}

// Σ of the ZERO_PARTS partials of q·zero of K group g (rows 0 … 3).
fn q_zero_of_group(g: u32) -> vec4<f32> {
  var qz = q_zero_rows[g * ZERO_PARTS];
  for (var j = 1u; j < ZERO_PARTS; j++) {
    qz += q_zero_rows[g * ZERO_PARTS + j];
  }
  return qz;
}

// Which of rows 0 … 3 see a key at position kpos (none when `present` is false).
fn rows_visible(present: bool, kpos: u32) -> vec4<bool> {
  return vec4<bool>(
    present && kpos <= qpos_shared[0],
    present && kpos <= qpos_shared[min(1u, ROWS - 1u) / GROUP],
    present && kpos <= qpos_shared[min(2u, ROWS - 1u) / GROUP],
    present && kpos <= qpos_shared[min(3u, ROWS - 1u) / GROUP],
  );
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let partitions = params.partitions;
  if (group_index >= params.tiles * KV_HEADS * partitions) {
    return;
  }
  let part_index = group_index % partitions;
  let kv_head = (group_index / partitions) % KV_HEADS;
  let tile = group_index / (partitions * KV_HEADS);
  let first_query = tile * QUERY_TILE;
  let slot = query_slot[first_query];
  let row_index = (params.layer * params.seq_slots + slot) * KV_HEADS + kv_head;
  let table_base = row_index * params.max_blocks;

  for (var i = lid; i < ROWS * HEAD_DIM / 4u; i += WORKGROUP_SIZE) {
    let r = i / (HEAD_DIM / 4u);
    let qi = min(first_query + r / GROUP, params.num_queries - 1u);
    let head = kv_head * GROUP + r % GROUP;
    let q = (qi * N_HEADS + head) * HEAD_DIM + (i % (HEAD_DIM / 4u)) * 4u;
    q_shared[i] = vec4<f32>(queries[q], queries[q + 1u], queries[q + 2u], queries[q + 3u]) * params.scale;
  }
  if (ROW_VECTOR) {
    for (var c = lid; c < HEAD_DIM; c += WORKGROUP_SIZE) {
      var v = vec4<f32>(0.0);
      for (var r = 0u; r < ROWS; r++) {
        let qi = min(first_query + r / GROUP, params.num_queries - 1u);
        v[r] = queries[(qi * N_HEADS + kv_head * GROUP + r % GROUP) * HEAD_DIM + c] * params.scale;
      }
      q_rows[c] = v;
    }
  }
  if (lid < QUERY_TILE) {
    // A tile row past the last query sees nothing; its outputs are never written.
    let qi = first_query + lid;
    qpos_shared[lid] = select(0u, query_pos[min(qi, params.num_queries - 1u)], qi < params.num_queries);
  }
  if (lid == 0u) {
    len_shared = context_lens[row_index];
  }
  let len = workgroupUniformLoad(&len_shared);
  if (kv_head == 0u && part_index == 0u && lid < QUERY_TILE && first_query + lid < params.num_queries) {
    partials[qpos_base() + first_query + lid] = bitcast<f32>(query_pos[first_query + lid]);
  }
  let start = part_index * params.partition_tokens;
  let end = min(len, start + params.partition_tokens);

  var m_run = MASKED_LOGIT;
  var l_run = 0.0;
  // ROW_VECTOR: rows 0 … 3's running maximum (the same in every thread), this thread's share of their sums, and
  // the last chunk's rescaling.
  var m_rows = vec4<f32>(MASKED_LOGIT);
  var l_part = vec4<f32>(0.0);
  var alpha_rows = vec4<f32>(1.0);
  let lane = lid % LANES;
  let part = lid / LANES;
  var acc: array<vec4<f32>, ROWS * OCTETS_PER_LANE * 2u>;
  var zacc: array<f32, ROWS * OCTETS_PER_LANE>;
  // ROW_VECTOR: channel j of the lane's octet for rows 0 … 3, and the V zero-point term.
  var v0 = vec4<f32>(0.0);
  var v1 = vec4<f32>(0.0);
  var v2 = vec4<f32>(0.0);
  var v3 = vec4<f32>(0.0);
  var v4 = vec4<f32>(0.0);
  var v5 = vec4<f32>(0.0);
  var v6 = vec4<f32>(0.0);
  var v7 = vec4<f32>(0.0);
  var vz = vec4<f32>(0.0);

  for (var chunk = start; chunk < end; chunk += CHUNK_TOKENS) {
    if (HAS_QUANT && FOLD_K_SCALE && ROW_VECTOR) {
      // ZERO_PARTS threads per K group: one block-table read each, then every 4 channels one 16-byte word of
      // (scale, zero) pairs, q·scale staged and q·zero summed in registers.
      for (var item = lid; item < K_GROUPS_PER_CHUNK * ZERO_PARTS; item += WORKGROUP_SIZE) {
        let g = item / ZERO_PARTS;
        let words = k_group_words(chunk, end, table_base, g);
        var qz = vec4<f32>(0.0);
        for (var c4 = item % ZERO_PARTS; c4 < QUADS; c4 += ZERO_PARTS) {
          var scale = vec4<f32>(0.0);
          var zero = vec4<f32>(0.0);
          if (words != 0xffffffffu) {
            let w = quant_pool[(words + c4 * 4u) >> 2u];
            let a = unpack2x16float(w.x);
            let b = unpack2x16float(w.y);
            let c = unpack2x16float(w.z);
            let d = unpack2x16float(w.w);
            scale = vec4<f32>(a.x, b.x, c.x, d.x);
            zero = vec4<f32>(a.y, b.y, c.y, d.y);
          }
          let c = c4 * 4u;
          let base = g * HEAD_DIM + c;
          scratch[base] = q_rows[c] * scale.x;
          scratch[base + 1u] = q_rows[c + 1u] * scale.y;
          scratch[base + 2u] = q_rows[c + 2u] * scale.z;
          scratch[base + 3u] = q_rows[c + 3u] * scale.w;
          qz = fma(q_rows[c], vec4<f32>(zero.x), qz);
          qz = fma(q_rows[c + 1u], vec4<f32>(zero.y), qz);
          qz = fma(q_rows[c + 2u], vec4<f32>(zero.z), qz);
          qz = fma(q_rows[c + 3u], vec4<f32>(zero.w), qz);
        }
        q_zero_rows[item] = qz;
      }
    } else if (HAS_QUANT && FOLD_K_SCALE) {
      // A token of group g then costs the same as a full one: codes · (q·scale), plus q·zero once per group.
      for (var i = lid; i < K_GROUPS_PER_CHUNK * ROWS * QUADS; i += WORKGROUP_SIZE) {
        let g = i / (ROWS * QUADS);
        let r = (i / QUADS) % ROWS;
        let c4 = i % QUADS;
        scratch[i] = q_shared[r * QUADS + c4] * k_group_params(chunk, end, table_base, g, c4)[0];
      }
      if (lid < K_GROUPS_PER_CHUNK * ROWS) {
        let g = lid / ROWS;
        let r = lid % ROWS;
        var qz = 0.0;
        for (var c4 = 0u; c4 < QUADS; c4++) {
          qz += dot(q_shared[r * QUADS + c4], k_group_params(chunk, end, table_base, g, c4)[1]);
        }
        q_zero[lid] = qz;
      }
    } else if (HAS_QUANT) {
      for (var i = lid; i < K_GROUPS_PER_CHUNK * QUADS; i += WORKGROUP_SIZE) {
        let scale_zero = k_group_params(chunk, end, table_base, i / QUADS, i % QUADS);
        scratch[i] = scale_zero[0];
        // Codes come biased by CODE_BIAS; the zero takes it back (exact products, one rounding here).
        scratch[K_ZERO_BASE + i] = scale_zero[1] - CODE_BIAS * scale_zero[0];
      }
    }
    workgroupBarrier();

    // Logits: a thread owns tokens, reads each K octet once and dots it with every row of the tile. ROW_VECTOR:
    // one loop per format over the thread's tokens, each skipped when no block of the chunk has that format.
    // SwiftShader ran a loop holding both formats' code about 1.5× slower per token than either alone (and it
    // executes both arms of a branch under lane masks, but leaves a loop that no lane enters).
    var chunk_quant = false;
    var chunk_full = false;
    for (var b = chunk / BLOCK_SIZE; ROW_VECTOR && b * BLOCK_SIZE < min(end, chunk + CHUNK_TOKENS); b++) {
      let quant = is_quant(block_table[table_base + b]);
      chunk_quant = chunk_quant || quant;
      chunk_full = chunk_full || !quant;
    }
    for (var k = 0u; ROW_VECTOR && k < TOKENS_PER_THREAD; k++) {
      let tl = owned_token(lid, k);
      if (chunk + tl >= end) {
        for (var r = 0u; r < ROWS; r++) {
          logits[r * CHUNK_TOKENS + tl] = MASKED_LOGIT;
        }
      }
    }
    for (var k = 0u; K_TOKEN_QUADS && k < select(0u, TOKENS_PER_THREAD, chunk_quant); k += 4u) {
      let tl = owned_token(lid, k);
      let t = chunk + tl;
      if (t < end) {
        let entry = block_table[table_base + t / BLOCK_SIZE];
        if (is_quant(entry)) {
          // Tokens tl … tl + 3: one block and one K group (K_TOKEN_QUADS); those past the end are computed, not stored.
          let s = t % BLOCK_SIZE;
          let block = entry & 0x7fffffffu;
          let g = tl / QUANT_GROUP;
          let first = block * QUANT_WORDS_PER_BLOCK + s * (HEAD_DIM / 8u);
          var d0 = vec4<f32>(0.0);
          var d1 = vec4<f32>(0.0);
          var d2 = vec4<f32>(0.0);
          var d3 = vec4<f32>(0.0);
          for (var w = 0u; w < OCTETS; w++) {
            let dots = dot_scaled_quad(g * HEAD_DIM + w * 8u, quant_word(first + w), quant_word(first + HEAD_DIM / 8u + w), quant_word(first + 2u * HEAD_DIM / 8u + w), quant_word(first + 3u * HEAD_DIM / 8u + w));
            d0 += dots[0];
            d1 += dots[1];
            d2 += dots[2];
            d3 += dots[3];
          }
          let qz = q_zero_of_group(g);
          store_quad_logit(tl, d0 + qz, entry, s, true);
          store_quad_logit(tl + 1u, d1 + qz, entry, s + 1u, t + 1u < end);
          store_quad_logit(tl + 2u, d2 + qz, entry, s + 2u, t + 2u < end);
          store_quad_logit(tl + 3u, d3 + qz, entry, s + 3u, t + 3u < end);
        }
      }
    }
    for (var k = 0u; ROW_VECTOR && !K_TOKEN_QUADS && k < select(0u, TOKENS_PER_THREAD, chunk_quant); k++) {
      let tl = owned_token(lid, k);
      let t = chunk + tl;
      if (t < end) {
        let entry = block_table[table_base + t / BLOCK_SIZE];
        if (is_quant(entry)) {
          let s = t % BLOCK_SIZE;
          let block = entry & 0x7fffffffu;
          // When a K group spans whole multiples of the workgroup, g follows from the loop counter alone: the
          // staged loads are then the same for every thread, which SwiftShader turns into one load, not a gather.
          let g = select(tl / QUANT_GROUP, (k * WORKGROUP_SIZE) / QUANT_GROUP, QUANT_GROUP % WORKGROUP_SIZE == 0u);
          var d = vec4<f32>(0.0);
          for (var w = 0u; w < K_QUANT_STEPS; w++) {
            d += quant_k_step(block, s, g, w);
          }
          if (FOLD_K_SCALE) {
            d += q_zero_of_group(g);
          }
          let masked = select(vec4<f32>(MASKED_LOGIT), d, rows_visible(true, token_position(entry, s)));
          for (var r = 0u; r < ROWS; r++) {
            logits[r * CHUNK_TOKENS + tl] = masked[r];
          }
        }
      }
    }
    for (var k = 0u; ROW_VECTOR && k < select(0u, TOKENS_PER_THREAD, chunk_full); k++) {
      let tl = owned_token(lid, k);
      let t = chunk + tl;
      if (t < end) {
        let entry = block_table[table_base + t / BLOCK_SIZE];
        if (!is_quant(entry)) {
          let s = t % BLOCK_SIZE;
          let block = entry & 0x7fffffffu;
          var d = vec4<f32>(0.0);
          for (var o = 0u; o < OCTETS; o++) {
            let kv = full_octet(block, s, o, false);
            d += dot_q_rows(o * 8u, kv[0], kv[1]);
          }
          let masked = select(vec4<f32>(MASKED_LOGIT), d, rows_visible(true, token_position(entry, s)));
          for (var r = 0u; r < ROWS; r++) {
            logits[r * CHUNK_TOKENS + tl] = masked[r];
          }
        }
      }
    }
    if (ROW_VECTOR) {
      // Online softmax in the threads that own the tokens: the logits are their own writes.
      var local_max = vec4<f32>(MASKED_LOGIT);
      for (var k = 0u; k < TOKENS_PER_THREAD; k++) {
        local_max = max(local_max, row_probs(owned_token(lid, k)));
      }
      let m_new = max(m_rows, workgroup_max_rows(local_max, lid));
      alpha_rows = select(vec4<f32>(1.0), exp(m_rows - m_new), m_rows > vec4<f32>(MASKED_LOGIT));
      var sum = vec4<f32>(0.0);
      for (var k = 0u; k < TOKENS_PER_THREAD; k++) {
        let tl = owned_token(lid, k);
        let x = row_probs(tl);
        let p = select(vec4<f32>(0.0), exp(x - m_new), x > vec4<f32>(MASKED_LOGIT));
        for (var r = 0u; r < ROWS; r++) {
          logits[r * CHUNK_TOKENS + tl] = p[r];
        }
        sum += p;
      }
      l_part = fma(l_part, alpha_rows, sum);
      m_rows = m_new;
    }
    for (var k = 0u; !ROW_VECTOR && k < TOKENS_PER_THREAD; k++) {
      let tl = lid + k * WORKGROUP_SIZE;
      let t = chunk + tl;
      // Zeroed explicitly: SwiftShader kept the previous chunk's values in a loop-scoped array declared without one.
      var dots: array<f32, ROWS>;
      for (var r = 0u; r < ROWS; r++) {
        dots[r] = 0.0;
      }
      var kpos = 0xffffffffu;
      if (t < end) {
        let entry = block_table[table_base + t / BLOCK_SIZE];
        let s = t % BLOCK_SIZE;
        let block = entry & 0x7fffffffu;
        kpos = token_position(entry, s);
        if (is_quant(entry)) {
          // When a K group spans whole multiples of the workgroup, g follows from the loop counter alone: the
          // staged loads are then the same for every thread, which SwiftShader turns into one load, not a gather.
          let g = select(tl / QUANT_GROUP, (k * WORKGROUP_SIZE) / QUANT_GROUP, QUANT_GROUP % WORKGROUP_SIZE == 0u);
          if (FOLD_K_SCALE) {
            for (var o = 0u; o < OCTETS; o++) {
              let codes = quant_octet_codes(block, s, o, false);
              // Unbiased: the bias times q·scale would cancel against q·zero in f32.
              let k0 = codes[0] - CODE_BIAS;
              let k1 = codes[1] - CODE_BIAS;
              for (var r = 0u; r < ROWS; r++) {
                let q = (g * ROWS + r) * QUADS + o * 2u;
                dots[r] += dot(k0, scratch[q]) + dot(k1, scratch[q + 1u]);
              }
            }
            for (var r = 0u; r < ROWS; r++) {
              dots[r] += q_zero[g * ROWS + r];
            }
          } else {
            for (var o = 0u; o < OCTETS; o++) {
              let codes = quant_octet_codes(block, s, o, false);
              let p0 = g * QUADS + o * 2u;
              let k0 = fma(codes[0], scratch[p0], scratch[K_ZERO_BASE + p0]);
              let k1 = fma(codes[1], scratch[p0 + 1u], scratch[K_ZERO_BASE + p0 + 1u]);
              for (var r = 0u; r < ROWS; r++) {
                let q = r * QUADS + o * 2u;
                dots[r] += dot(k0, q_shared[q]) + dot(k1, q_shared[q + 1u]);
              }
            }
          }
        } else {
          for (var o = 0u; o < OCTETS; o++) {
            let kv = full_octet(block, s, o, false);
            for (var r = 0u; r < ROWS; r++) {
              let q = (r * HEAD_DIM + o * 8u) / 4u;
              dots[r] += dot(kv[0], q_shared[q]) + dot(kv[1], q_shared[q + 1u]);
            }
          }
        }
      }
      for (var r = 0u; r < ROWS; r++) {
        let visible = t < end && kpos <= qpos_shared[r / GROUP];
        logits[r * CHUNK_TOKENS + tl] = select(MASKED_LOGIT, dots[r], visible);
      }
    }
    workgroupBarrier();

    // Online softmax of the general path: one thread per row rescans the chunk.
    if (!ROW_VECTOR && lid < ROWS) {
      var chunk_max = MASKED_LOGIT;
      for (var i = 0u; i < CHUNK_TOKENS; i++) {
        chunk_max = max(chunk_max, logits[lid * CHUNK_TOKENS + i]);
      }
      let m_new = max(m_run, chunk_max);
      var sum = 0.0;
      for (var i = 0u; i < CHUNK_TOKENS; i++) {
        let x = logits[lid * CHUNK_TOKENS + i];
        let p = select(0.0, exp(x - m_new), x > MASKED_LOGIT);
        logits[lid * CHUNK_TOKENS + i] = p;
        sum += p;
      }
      let alpha = select(1.0, exp(m_run - m_new), m_run > MASKED_LOGIT);
      l_run = l_run * alpha + sum;
      m_run = m_new;
      alpha_shared[lid] = alpha;
    }
    if (!ROW_VECTOR) {
      workgroupBarrier();
    }

    // V mix: lanes own octets of channels, parts own tokens of the chunk.
    if (ROW_VECTOR && part < PARTS) {
      let alpha = alpha_rows;
      v0 *= alpha;
      v1 *= alpha;
      v2 *= alpha;
      v3 *= alpha;
      v4 *= alpha;
      v5 *= alpha;
      v6 *= alpha;
      v7 *= alpha;
      vz *= alpha;
      // Block by block, each format a loop that runs zero times for the other (see the logits).
      let first = part * TOKENS_PER_PART;
      let last = min(first + TOKENS_PER_PART, end - chunk);
      for (var run_start = first; run_start < last;) {
        let t0 = chunk + run_start;
        let s0 = t0 % BLOCK_SIZE;
        let entry = block_table[table_base + t0 / BLOCK_SIZE];
        let block = entry & 0x7fffffffu;
        let run = min(BLOCK_SIZE - s0, last - run_start);
        let quant = is_quant(entry);
        for (var i = 0u; i < select(0u, run, quant); i++) {
          let s = s0 + i;
          var p = row_probs(run_start + i);
          var v: array<vec4<f32>, 2>;
          if (QUANT_BITS == 4u) {
            let word = int4_octet_word(block, s, lane, true);
            v = array<vec4<f32>, 2>(int4_low(word), int4_high(word));
          } else {
            let biased = quant_octet_codes(block, s, lane, true);
            v = array<vec4<f32>, 2>(biased[0] - CODE_BIAS, biased[1] - CODE_BIAS);
          }
          let sz = unpack2x16float(
            quant_word(block * QUANT_WORDS_PER_BLOCK + QUANT_VP_OFFSET + s * (HEAD_DIM / QUANT_GROUP) + (lane * 8u) / QUANT_GROUP),
          );
          vz = fma(p, vec4<f32>(sz.y), vz);
          p *= sz.x;
          v0 = fma(p, vec4<f32>(v[0].x), v0);
          v1 = fma(p, vec4<f32>(v[0].y), v1);
          v2 = fma(p, vec4<f32>(v[0].z), v2);
          v3 = fma(p, vec4<f32>(v[0].w), v3);
          v4 = fma(p, vec4<f32>(v[1].x), v4);
          v5 = fma(p, vec4<f32>(v[1].y), v5);
          v6 = fma(p, vec4<f32>(v[1].z), v6);
          v7 = fma(p, vec4<f32>(v[1].w), v7);
        }
        for (var i = 0u; i < select(run, 0u, quant); i++) {
          let p = row_probs(run_start + i);
          let v = full_octet(block, s0 + i, lane, true);
          v0 = fma(p, vec4<f32>(v[0].x), v0);
          v1 = fma(p, vec4<f32>(v[0].y), v1);
          v2 = fma(p, vec4<f32>(v[0].z), v2);
          v3 = fma(p, vec4<f32>(v[0].w), v3);
          v4 = fma(p, vec4<f32>(v[1].x), v4);
          v5 = fma(p, vec4<f32>(v[1].y), v5);
          v6 = fma(p, vec4<f32>(v[1].z), v6);
          v7 = fma(p, vec4<f32>(v[1].w), v7);
        }
        run_start += run;
      }
    } else if (part < PARTS) {
      for (var r = 0u; r < ROWS; r++) {
        let alpha = alpha_shared[r];
        for (var c = 0u; c < OCTETS_PER_LANE; c++) {
          let a = (r * OCTETS_PER_LANE + c) * 2u;
          acc[a] *= alpha;
          acc[a + 1u] *= alpha;
          zacc[r * OCTETS_PER_LANE + c] *= alpha;
        }
      }
      // A part walks a contiguous run of the chunk, so it reads each block-table entry once.
      let first = part * TOKENS_PER_PART;
      let last = min(first + TOKENS_PER_PART, end - chunk);
      var entry = 0u;
      for (var tl = first; tl < last; tl++) {
        let t = chunk + tl;
        let s = t % BLOCK_SIZE;
        if (tl == first || s == 0u) {
          entry = block_table[table_base + t / BLOCK_SIZE];
        }
        let block = entry & 0x7fffffffu;
        let quant = is_quant(entry);
        for (var c = 0u; c < OCTETS_PER_LANE; c++) {
          let o = lane + c * LANES;
          if (o >= OCTETS) {
            continue;
          }
          if (quant) {
            let biased = quant_octet_codes(block, s, o, true);
            // Unbiased before the mix: folding the bias into the zero would cancel ~1024·Σp·s over many tokens.
            let codes = array<vec4<f32>, 2>(biased[0] - CODE_BIAS, biased[1] - CODE_BIAS);
            let sz = unpack2x16float(
              quant_word(block * QUANT_WORDS_PER_BLOCK + QUANT_VP_OFFSET + s * (HEAD_DIM / QUANT_GROUP) + (o * 8u) / QUANT_GROUP),
            );
            for (var r = 0u; r < ROWS; r++) {
              let p = logits[r * CHUNK_TOKENS + tl];
              let ps = p * sz.x;
              let a = (r * OCTETS_PER_LANE + c) * 2u;
              acc[a] = fma(vec4<f32>(ps), codes[0], acc[a]);
              acc[a + 1u] = fma(vec4<f32>(ps), codes[1], acc[a + 1u]);
              zacc[r * OCTETS_PER_LANE + c] = fma(p, sz.y, zacc[r * OCTETS_PER_LANE + c]);
            }
          } else {
            let v = full_octet(block, s, o, true);
            for (var r = 0u; r < ROWS; r++) {
              let p = vec4<f32>(logits[r * CHUNK_TOKENS + tl]);
              let a = (r * OCTETS_PER_LANE + c) * 2u;
              acc[a] = fma(p, v[0], acc[a]);
              acc[a + 1u] = fma(p, v[1], acc[a + 1u]);
            }
          }
        }
      }
    }
    workgroupBarrier();
  }

  var l_rows = vec4<f32>(0.0);
  if (ROW_VECTOR) {
    l_rows = workgroup_sum_rows(l_part, lid);
  }
  if (ROW_VECTOR && part < PARTS) {
    for (var r = 0u; r < ROWS; r++) {
      let base = (part * ROWS + r) * QUADS + lane * 2u;
      scratch[base] = vec4<f32>(v0[r], v1[r], v2[r], v3[r]) + vz[r];
      scratch[base + 1u] = vec4<f32>(v4[r], v5[r], v6[r], v7[r]) + vz[r];
    }
  } else if (part < PARTS) {
    for (var r = 0u; r < ROWS; r++) {
      for (var c = 0u; c < OCTETS_PER_LANE; c++) {
        let o = lane + c * LANES;
        if (o >= OCTETS) {
          continue;
        }
        let a = (r * OCTETS_PER_LANE + c) * 2u;
        let z = vec4<f32>(zacc[r * OCTETS_PER_LANE + c]);
        let base = (part * ROWS + r) * QUADS + o * 2u;
        scratch[base] = acc[a] + z;
        scratch[base + 1u] = acc[a + 1u] + z;
      }
    }
  }
  workgroupBarrier();
  for (var i = lid; i < ROWS * QUADS; i += WORKGROUP_SIZE) {
    let r = i / QUADS;
    let qi = first_query + r / GROUP;
    if (qi >= params.num_queries) {
      continue;
    }
    var sum = vec4<f32>(0.0);
    for (var p = 0u; p < PARTS; p++) {
      sum += scratch[p * ROWS * QUADS + i];
    }
    let head = kv_head * GROUP + r % GROUP;
    let out = ((qi * N_HEADS + head) * partitions + part_index) * HEAD_DIM + (i % QUADS) * 4u;
    partials[out] = sum.x;
    partials[out + 1u] = sum.y;
    partials[out + 2u] = sum.z;
    partials[out + 3u] = sum.w;
  }
  if (lid < ROWS) {
    let qi = first_query + lid / GROUP;
    if (qi < params.num_queries) {
      let head = kv_head * GROUP + lid % GROUP;
      let ml = select(vec2<f32>(m_run, l_run), vec2<f32>(m_rows[lid], l_rows[lid]), ROW_VECTOR);
      let at = ml_base() + ((qi * N_HEADS + head) * partitions + part_index) * 2u;
      partials[at] = ml.x;
      partials[at + 1u] = ml.y;
    }
  }
}
