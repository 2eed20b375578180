// Builds fresh destination blocks from lists of source tokens: one workgroup per job. A job is
//   {row, destination block-table entry, count ≤ BLOCK_SIZE, index base, identity start, value base}
// and its token i is logical index indices[base + i] (or identity start + i when base = 0xffffffff) of `row` in
// the CURRENT block table. With a value base other than 0xffffffff, token i's value is merged[value base + i]
// (f32 [HEAD_DIM], written by shaders/merge_values.wgsl or merge_cam.wgsl) instead of its own where bit
// value base + i of merged_mask is set: merged tokens quantize like the rest. That is done by a second dispatch
// of the same jobs (MERGED_ROWS, after an unmerged one) where the layout lets one token's V be rewritten alone,
// else inside the one dispatch (MERGED_VALUES).
// Every read of a kept token goes through kept_token / kept_quad / kept_position (any source format,
// dequantized to f32). The destination is written in its own pool's format: f32/f16 like shaders/kv_append.wgsl,
// or KIVI int8/int4/int2 exactly as src/format/block-codec.ts encodes (K per channel over G tokens, V per token
// over G channels). Every word of the destination block is written (unfilled slots, codes and parameters are 0),
// by exactly one thread, so no atomics are needed. Destinations are never sources, so reading and writing the
// pools in the same dispatch is safe.
//
// Quantized destinations whose code words never span two tokens and whose G is a multiple of 4 (the defaults
// at head_dim ≥ 16) are cut into items that each own whole words, computed once in registers and written once:
//   K item = (token group, K_SPAN channels: one code word's, or two int8 words' so that it reads whole 8-channel
//            octets): per-channel min/max over the group, then its code words for every token of the group;
//   V item = (token, V_SPAN channels: whole groups and whole code words): per-group min/max, then its words.
// Where the device has subgroups and the workgroup is one quad of 4 (QUAD_K_ITEMS), the 4 lanes share each K item
// instead (shaders/compact_k_quad.wgsl). Other layouts (head_dim 8 with int2, G 1 or 2, ...) take
// quantize_by_word, which recomputes a value's group parameters where it needs them.
//
// Shaped for SwiftShader as well as GPUs (measured with bench --only quantize):
// - no barrier anywhere: a shader with one runs each group of lanes as a coroutine there, and no thread reads
//   what another wrote;
// - SwiftShader runs EVERY branch, lanes masked (and a loop's body at least once), so what a run cannot need
//   is compiled out by constants instead of branched around: quantized-source reads (FULL_SOURCES), merged
//   values (MERGED_VALUES); and loops carry little state (the V item comes unrolled, see below). For the same
//   reason merged rows are written by their own pass whose loops run once per merged token (MERGED_ROWS):
//   choosing between a token's own value and its merged row per channel quad cost what reading V twice does.

@group(0) @binding(0) var<uniform> params: CompactBlocksParams;
@group(0) @binding(1) var<storage, read> jobs: array<u32>;         // [num_jobs][6]
@group(0) @binding(2) var<storage, read> indices: array<u32>;      // source logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;  // [row][max_blocks]
// Binding 4, full_pool (array<u32>), is declared by the library compactBindings() generates
// (src/kernels/compress/compact-unrolled.ts), as are store_full and full_row_words: read_write in the kernel for
// any destinations; read-only, with a second read-only view `full_rows: array<vec4<u32>>` of the same buffer at
// binding 7, in the QUANT_DESTINATIONS variant, whose jobs all write quantized blocks (WebGPU forbids a read-only
// and a read_write binding of one buffer in one dispatch). On SwiftShader a storage load is paid per lane and
// per load instruction, so one vec4 load of 8 f16 channels costs about what one u32 load does (a vec4 copy kernel
// moves the same bytes 2.2x faster than shaders/copy.wgsl there).
@group(0) @binding(5) var<storage, read_write> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read> merged: array<f32>;       // [slot][HEAD_DIM] merged values
@group(0) @binding(8) var<storage, read> merged_mask: array<u32>;  // bit slot: that merged row was written

const IDENTITY: u32 = 0xffffffffu;
const SLOT_SOURCE_FLAG: u32 = 0x80000000u;
const LEVELS: u32 = (1u << QUANT_BITS) - 1u;
const VALUES_PER_WORD: u32 = 32u / QUANT_BITS;
const GROUPS_PER_TOKEN: u32 = HEAD_DIM / QUANT_GROUP;
const QUANT_WHOLE_WORDS: bool = HEAD_DIM % VALUES_PER_WORD == 0u && QUANT_GROUP % 4u == 0u &&
  (QUANT_GROUP % VALUES_PER_WORD == 0u || VALUES_PER_WORD % QUANT_GROUP == 0u);
// Channels of one V item: whole groups and whole code words.
const V_SPAN: u32 = max(QUANT_GROUP, VALUES_PER_WORD);
// (max(…, 1): the by-word layouts never use these, but a constant division by zero would not compile.)
// Channels of one K item: one code word's, or two int8 words' (8 channels, one f16 octet) where head_dim allows.
const K_SPAN: u32 = select(VALUES_PER_WORD, max(VALUES_PER_WORD, 8u), HEAD_DIM % 8u == 0u);
const K_QUADS: u32 = K_SPAN / 4u;
const K_WORDS: u32 = K_SPAN / VALUES_PER_WORD;
const WORDS_PER_TOKEN: u32 = HEAD_DIM / VALUES_PER_WORD;
const K_COLUMNS: u32 = max(HEAD_DIM / K_SPAN, 1u);
const V_COLUMNS: u32 = max(HEAD_DIM / V_SPAN, 1u);
const K_ITEMS: u32 = (BLOCK_SIZE / QUANT_GROUP) * K_COLUMNS;
const V_ITEMS: u32 = BLOCK_SIZE * V_COLUMNS;
// Channel quads start at multiples of 4 within a token, and for V within one group.
const QUADS_ALIGNED: bool = HEAD_DIM % 4u == 0u && QUANT_GROUP % 4u == 0u;
// Channel quads per token; with head_dim ≡ 2 (mod 4) the last one is a pair.
const QUADS_PER_TOKEN: u32 = (HEAD_DIM + 3u) / 4u;

struct Job {
  row: u32,
  count: u32,
  index_base: u32,
  identity_start: u32,
  value_base: u32,
}

var<private> job: Job;
// Bit t: filled token t's value is its merged row (read once per job, not once per quad).
var<private> job_merged: u32;

// A kept token: destination slot t, and where its source lives now (block-table entry and slot).
struct KeptToken {
  t: u32,
  entry: u32,
  slot: u32,
}

// ---- The one place a kept token is read from its source (the job's index list, the pools, `merged`). ----

fn kept_token(t: u32) -> KeptToken {
  var logical = job.identity_start + t;
  if (job.index_base != IDENTITY) {
    logical = indices[job.index_base + t];
  }
  if (SLOT_SOURCES && logical >= SLOT_SOURCE_FLAG) {
    return slot_source_token(t, logical);
  }
  return KeptToken(t, block_table[job.row * params.max_blocks + logical / BLOCK_SIZE], logical % BLOCK_SIZE);
}

// Channels d..d + 3 of a quantized source token (QUADS_ALIGNED and d a multiple of 4: the four codes share one
// code word, and for V one parameter word); decoded exactly as quant_value does.
fn quant_quad(block: u32, slot: u32, d: u32, v_part: bool) -> vec4<f32> {
  let base = block * QUANT_WORDS_PER_BLOCK;
  let bit = (slot * HEAD_DIM + d) * QUANT_BITS;
  let word = quant_pool[base + select(0u, QUANT_V_OFFSET, v_part) + bit / 32u] >> (bit % 32u);
  let codes = vec4<f32>(
    f32(word & LEVELS),
    f32((word >> QUANT_BITS) & LEVELS),
    f32((word >> (2u * QUANT_BITS)) & LEVELS),
    f32((word >> (3u * QUANT_BITS)) & LEVELS),
  );
  var scale: vec4<f32>;
  var zero: vec4<f32>;
  if (v_part) {
    let p = unpack2x16float(quant_pool[base + QUANT_VP_OFFSET + slot * GROUPS_PER_TOKEN + d / QUANT_GROUP]);
    scale = vec4<f32>(p.x);
    zero = vec4<f32>(p.y);
  } else {
    let at = base + QUANT_KP_OFFSET + (slot / QUANT_GROUP) * HEAD_DIM + d;
    let words = vec4<u32>(quant_pool[at], quant_pool[at + 1u], quant_pool[at + 2u], quant_pool[at + 3u]);
    scale = scales(words);
    zero = zeros(words);
  }
  return codes * scale + zero;
}

// Channels d..d + 3 of filled token t's merged value where the merge wrote that row (its bit in job_merged), else
// x: the token's own value, read from its source as for any job.
fn merged_quad(t: u32, d: u32, x: vec4<f32>) -> vec4<f32> {
  if (((job_merged >> t) & 1u) != 0u) {
    return merged_row_quad(t, d);
  }
  return x;
}

// Channels d..d + 3 of filled token t's merged row.
fn merged_row_quad(t: u32, d: u32) -> vec4<f32> {
  let m = (job.value_base + t) * HEAD_DIM + d;
  return vec4<f32>(merged[m], merged[m + 1u], merged[m + 2u], merged[m + 3u]);
}

// Channels d..d + 3 of the token's K (v_part false) or V, d even (a multiple of 4 when QUADS_ALIGNED); lanes
// at or past HEAD_DIM are unspecified. SwiftShader runs every branch here with lanes masked, so the source
// kinds a run cannot have are compiled out (FULL_SOURCES, MERGED_VALUES).
fn kept_quad(token: KeptToken, d: u32, v_part: bool) -> vec4<f32> {
  let base = kv_block(token.entry) * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part);
  let i = token.slot * HEAD_DIM + d;
  var x: vec4<f32>;
  if (FULL_F16) {
    x = vec4<f32>(unpack2x16float(full_pool[base + i / 2u]), unpack2x16float(full_pool[base + i / 2u + 1u]));
  } else {
    x = vec4<f32>(
      bitcast<f32>(full_pool[base + i]),
      bitcast<f32>(full_pool[base + i + 1u]),
      bitcast<f32>(full_pool[base + i + 2u]),
      bitcast<f32>(full_pool[base + i + 3u]),
    );
  }
  if (!FULL_SOURCES && HAS_QUANT && kv_is_quant(token.entry)) {
    let block = kv_block(token.entry);
    if (QUADS_ALIGNED) {
      x = quant_quad(block, token.slot, d, v_part);
    } else {
      x = vec4<f32>(
        quant_value(block, token.slot, d, v_part),
        quant_value(block, token.slot, d + 1u, v_part),
        quant_value(block, token.slot, d + 2u, v_part),
        quant_value(block, token.slot, d + 3u, v_part),
      );
    }
  }
  if (MERGED_VALUES && v_part) {
    x = merged_quad(token.t, d, x);
  }
  if (SLOT_SOURCES && token.slot >= BLOCK_SIZE) {
    x = slot_source_quad(token, d, v_part);
  }
  return x;
}

// Word offset in full_pool of each filled token's K row (FULL_SOURCES runs: every kept token is a full one),
// resolved once per job by each thread instead of once per item and pass (a third of the K items' time).
var<private> rows: array<u32, BLOCK_SIZE>;

fn row_offset(token: KeptToken) -> u32 {
  return kv_block(token.entry) * FULL_WORDS_PER_BLOCK + token.slot * HEAD_DIM / select(1u, 2u, FULL_F16);
}

// Channels d..d + 3 of filled token t's K (v_part false) or V, as kept_quad reads them.
// Slot sources (merge 'slots') are not pool rows: those runs read through kept_quad.
fn row_quad(t: u32, d: u32, v_part: bool) -> vec4<f32> {
  if (MERGED_ROWS) {
    return merged_row_quad(t, d);
  }
  if (!FULL_SOURCES || SLOT_SOURCES) {
    return kept_quad(kept_token(t), d, v_part);
  }
  let r = rows[t] + select(0u, FULL_V_OFFSET, v_part);
  var x: vec4<f32>;
  if (FULL_F16) {
    x = vec4<f32>(unpack2x16float(full_pool[r + d / 2u]), unpack2x16float(full_pool[r + d / 2u + 1u]));
  } else {
    x = vec4<f32>(bitcast<f32>(full_pool[r + d]), bitcast<f32>(full_pool[r + d + 1u]), bitcast<f32>(full_pool[r + d + 2u]), bitcast<f32>(full_pool[r + d + 3u]));
  }
  if (MERGED_VALUES && v_part) {
    x = merged_quad(t, d, x);
  }
  return x;
}

// Whole full-pool rows fall on vec4<u32> boundaries (each row and each 8-channel octet starts at a multiple of 4
// words), so row_oct may read an octet with full_row_words.
const OCTETS_ALIGNED: bool = HEAD_DIM % 8u == 0u && FULL_WORDS_PER_BLOCK % 4u == 0u && FULL_V_OFFSET % 4u == 0u;

// Channels d..d + 7 of filled token t's K (v_part false) or V, d a multiple of 8 (HEAD_DIM too): row_quad's
// values, read as one vec4<u32> (f16) or two (f32) where the source is a pool row.
fn row_oct(t: u32, d: u32, v_part: bool) -> Octet {
  if (!OCTETS_ALIGNED || !FULL_SOURCES || SLOT_SOURCES || MERGED_ROWS) {
    return Octet(row_quad(t, d, v_part), row_quad(t, d + 4u, v_part));
  }
  let r = rows[t] + select(0u, FULL_V_OFFSET, v_part);
  var x: Octet;
  if (FULL_F16) {
    let w = full_row_words((r + d / 2u) / 4u);
    x = Octet(vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)), vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w)));
  } else {
    x = Octet(bitcast<vec4<f32>>(full_row_words((r + d) / 4u)), bitcast<vec4<f32>>(full_row_words((r + d) / 4u + 1u)));
  }
  if (MERGED_VALUES && v_part) {
    x = Octet(merged_quad(t, d, x.lo), merged_quad(t, d + 4u, x.hi));
  }
  return x;
}

fn kept_position(token: KeptToken) -> u32 {
  if (SLOT_SOURCES && token.slot >= BLOCK_SIZE) {
    return slot_source_position(token);
  }
  return kv_position(token.entry, token.slot);
}

// ---- Merge 'slots' sources (src/compress/gpu-slots.ts): a kept index SLOT_SOURCE_FLAG | r is slot token r of
// the slot state bound as `merged` (shaders/merge_slots.wgsl layout: per state head keys [MERGE_SLOTS][HEAD_DIM],
// values likewise, masses, positions as u32 bits, count), r = state head × MERGE_SLOTS + slot. Its KeptToken
// carries slot = BLOCK_SIZE + r (no block slot is that large) and entry 0 (a full entry, so the pool reads above
// stay in bounds and the quantized read is skipped); compiled out unless SLOT_SOURCES. ----

fn slot_source_token(t: u32, logical: u32) -> KeptToken {
  return KeptToken(t, 0u, BLOCK_SIZE + logical - SLOT_SOURCE_FLAG);
}

fn slot_source_word(token: KeptToken) -> u32 {
  let r = token.slot - BLOCK_SIZE;
  return (r / MERGE_SLOTS) * SLOT_STATE_WORDS + (r % MERGE_SLOTS) * HEAD_DIM;
}

fn slot_source_quad(token: KeptToken, d: u32, v_part: bool) -> vec4<f32> {
  let m = slot_source_word(token) + select(0u, MERGE_SLOTS * HEAD_DIM, v_part) + d;
  return vec4<f32>(merged[m], merged[m + 1u], merged[m + 2u], merged[m + 3u]);
}

fn slot_source_position(token: KeptToken) -> u32 {
  let r = token.slot - BLOCK_SIZE;
  return bitcast<u32>(merged[(r / MERGE_SLOTS) * SLOT_STATE_WORDS + 2u * MERGE_SLOTS * HEAD_DIM + MERGE_SLOTS + r % MERGE_SLOTS]);
}

// ---- Full destinations ----

// Channels d..d + 3 (d even) of slot t's row into the K or V part that starts at word `part` of a full block; with
// head_dim ≡ 2 (mod 4) the last quad is a pair.
fn store_full_quad(part: u32, t: u32, d: u32, x: vec4<f32>) {
  let at = t * HEAD_DIM + d;
  let whole = d + 4u <= HEAD_DIM;
  if (FULL_F16) {
    store_full(part + at / 2u, pack2x16float(x.xy));
    if (whole) {
      store_full(part + at / 2u + 1u, pack2x16float(x.zw));
    }
  } else {
    store_full(part + at, bitcast<u32>(x.x));
    store_full(part + at + 1u, bitcast<u32>(x.y));
    if (whole) {
      store_full(part + at + 2u, bitcast<u32>(x.z));
      store_full(part + at + 3u, bitcast<u32>(x.w));
    }
  }
}

fn write_full(base: u32, lid: u32) {
  // One channel quad of K and of V per step, each read once.
  for (var i = lid; i < BLOCK_SIZE * QUADS_PER_TOKEN; i += WORKGROUP_SIZE) {
    let t = i / QUADS_PER_TOKEN;
    let d = (i % QUADS_PER_TOKEN) * 4u;
    var k = vec4<f32>(0.0);
    var v = vec4<f32>(0.0);
    if (t < job.count) {
      let token = kept_token(t);
      k = kept_quad(token, d, false);
      v = kept_quad(token, d, true);
    }
    store_full_quad(base, t, d, k);
    store_full_quad(base + FULL_V_OFFSET, t, d, v);
  }
  for (var t = lid; t < BLOCK_SIZE; t += WORKGROUP_SIZE) {
    var pos = 0u;
    if (t < job.count) {
      pos = kept_position(kept_token(t));
    }
    store_full(base + FULL_POS_OFFSET + t, pos);
  }
}

// ---- KIVI arithmetic (CONTRIBUTING.md "Quantization (KIVI)") ----

// Parameter word pack2x16float(f16((M − m)/levels), f16(m)); pack2x16float does the f16 rounding.
fn param_word(lo: f32, hi: f32) -> u32 {
  return pack2x16float(vec2<f32>((hi - lo) / f32(LEVELS), lo));
}

fn param_words(lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {
  return vec4<u32>(param_word(lo.x, hi.x), param_word(lo.y, hi.y), param_word(lo.z, hi.z), param_word(lo.w, hi.w));
}

// The (scale, zero) of 4 values as quad_codes takes them: a zero scale (its codes are 0) becomes scale 1 with
// zero 3.4e38, so that (x − zero) / scale + 0.5 is far below 0 for every finite |x| < 1e38 (all a group whose
// f16 scale rounds to 0 can hold) and its code 0 needs no per-value select. Made once per group and item.
struct Coder {
  scale: vec4<f32>,
  zero: vec4<f32>,
}

fn coder(scale: vec4<f32>, zero: vec4<f32>) -> Coder {
  let none = scale == vec4<f32>(0.0);
  return Coder(select(scale, vec4<f32>(1.0), none), select(zero, vec4<f32>(3.4e38), none));
}

// The codes of 4 values, packed as they sit in a code word (first value lowest): exactly the codec's
// clamp(floor((x − zero) / scale + 0.5), 0, levels), the division included (a reciprocal would move codes on
// rounding boundaries); floor and clamp commute, levels being an integer. No f32 → u32 conversion: that one was
// a fifth of the kernel on SwiftShader (its saturating form costs several instructions a lane there). Instead
// the clamped, floored code n ≤ 255 is an exact f32 integer, n + 2^23 is exact with n in its low mantissa bits,
// and xor with the bits of 2^23 (0x4b000000) leaves n.
fn quad_codes(x: vec4<f32>, c: Coder) -> u32 {
  let n = floor(clamp((x - c.zero) / c.scale + 0.5, vec4<f32>(0.0), vec4<f32>(f32(LEVELS))));
  // The packing is done in f32 too: every product and partial sum below is an integer under 2^24, so exact in
  // any evaluation order. int4/int2: the quad's 16 or 8 bits at once; int8: two 16-bit halves.
  if (QUANT_BITS <= 4u) {
    let weights = vec4<f32>(1.0, f32(1u << QUANT_BITS), f32(1u << (2u * QUANT_BITS)), f32(1u << ((3u * QUANT_BITS) % 32u)));
    return bitcast<u32>(dot(n, weights) + 8388608.0) ^ 0x4b000000u;
  }
  let halves = bitcast<vec2<u32>>(n.xz + 256.0 * n.yw + 8388608.0) ^ vec2<u32>(0x4b000000u);
  return halves.x | (halves.y << 16u);
}

fn quant_code(x: f32, word: u32) -> u32 {
  let p = unpack2x16float(word);
  return quad_codes(vec4<f32>(x), coder(vec4<f32>(p.x), vec4<f32>(p.y))) & LEVELS;
}

// The scales (x) and zero-points (y) of 4 parameter words, as vec4s.
fn scales(words: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(words.x).x, unpack2x16float(words.y).x, unpack2x16float(words.z).x, unpack2x16float(words.w).x);
}

fn zeros(words: vec4<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(words.x).y, unpack2x16float(words.y).y, unpack2x16float(words.z).y, unpack2x16float(words.w).y);
}

// ---- Quantized destinations, whole words per item ----

fn store_k_params(p: u32, words: vec4<u32>) {
  quant_pool[p] = words.x;
  quant_pool[p + 1u] = words.y;
  quant_pool[p + 2u] = words.z;
  quant_pool[p + 3u] = words.w;
}

// quantize_v_item(base, t, c0), the whole-word V item, comes unrolled for the layout from
// src/kernels/compress/compact-unrolled.ts: each of its values is read once and stays in registers.

// K item: token group `group`, channels c0..c0 + K_SPAN − 1 (K_QUADS quads, spelled out with constant guards so
// every per-channel range stays in registers), whose K_WORDS code words per token it writes. Each value is read
// twice (min/max, then codes): holding a whole group's values instead spilled on SwiftShader and was slower. The
// shifts are taken % 32 because they must compile where their guard is false.
fn quantize_k_item(base: u32, group: u32, c0: u32) {
  let t0 = group * QUANT_GROUP;
  let t1 = min(t0 + QUANT_GROUP, job.count);
  var lo0 = vec4<f32>(3.4e38);
  var hi0 = vec4<f32>(-3.4e38);
  var lo1 = lo0;
  var hi1 = hi0;
  var lo2 = lo0;
  var hi2 = hi0;
  var lo3 = lo0;
  var hi3 = hi0;
  for (var t = t0; t < t1; t++) {
    if (K_QUADS == 1u) {
      let x0 = row_quad(t, c0, false);
      lo0 = min(lo0, x0);
      hi0 = max(hi0, x0);
    } else {
      let a = row_oct(t, c0, false);
      lo0 = min(lo0, a.lo);
      hi0 = max(hi0, a.lo);
      lo1 = min(lo1, a.hi);
      hi1 = max(hi1, a.hi);
    }
    if (K_QUADS > 2u) {
      let b = row_oct(t, c0 + 8u, false);
      lo2 = min(lo2, b.lo);
      hi2 = max(hi2, b.lo);
      lo3 = min(lo3, b.hi);
      hi3 = max(hi3, b.hi);
    }
  }
  // A group without filled tokens keeps parameter words 0 (and its codes are 0).
  let filled = t1 > t0;
  let p = base + QUANT_KP_OFFSET + group * HEAD_DIM + c0;
  let w0 = select(vec4<u32>(0u), param_words(lo0, hi0), filled);
  let w1 = select(vec4<u32>(0u), param_words(lo1, hi1), filled);
  let w2 = select(vec4<u32>(0u), param_words(lo2, hi2), filled);
  let w3 = select(vec4<u32>(0u), param_words(lo3, hi3), filled);
  store_k_params(p, w0);
  if (K_QUADS > 1u) {
    store_k_params(p + 4u, w1);
  }
  if (K_QUADS > 2u) {
    store_k_params(p + 8u, w2);
    store_k_params(p + 12u, w3);
  }
  let k0 = coder(scales(w0), zeros(w0));
  let k1 = coder(scales(w1), zeros(w1));
  let k2 = coder(scales(w2), zeros(w2));
  let k3 = coder(scales(w3), zeros(w3));
  let at = base + c0 / VALUES_PER_WORD;
  for (var t = t0; t < t1; t++) {
    if (K_QUADS == 1u) {
      quant_pool[at + t * WORDS_PER_TOKEN] = quad_codes(row_quad(t, c0, false), k0);
    } else {
      let a = row_oct(t, c0, false);
      let c = quad_codes(a.lo, k0);
      let d = quad_codes(a.hi, k1);
      if (K_WORDS == 2u) {
        quant_pool[at + t * WORDS_PER_TOKEN] = c;
        quant_pool[at + t * WORDS_PER_TOKEN + 1u] = d;
      } else if (K_QUADS == 2u) {
        quant_pool[at + t * WORDS_PER_TOKEN] = c | (d << ((4u * QUANT_BITS) % 32u));
      } else {
        let b = row_oct(t, c0 + 8u, false);
        quant_pool[at + t * WORDS_PER_TOKEN] = c | (d << ((4u * QUANT_BITS) % 32u)) |
          (quad_codes(b.lo, k2) << ((8u * QUANT_BITS) % 32u)) | (quad_codes(b.hi, k3) << ((12u * QUANT_BITS) % 32u));
      }
    }
  }
  for (var t = max(t1, t0); t < t0 + QUANT_GROUP; t++) {
    for (var w = 0u; w < K_WORDS; w++) {
      quant_pool[at + t * WORDS_PER_TOKEN + w] = 0u;
    }
  }
}

fn zero_v_item(base: u32, t: u32, c0: u32) {
  for (var w = 0u; w < V_SPAN / VALUES_PER_WORD; w++) {
    quant_pool[base + QUANT_V_OFFSET + (t * HEAD_DIM + c0) / VALUES_PER_WORD + w] = 0u;
  }
  for (var g = 0u; g < V_SPAN / QUANT_GROUP; g++) {
    quant_pool[base + QUANT_VP_OFFSET + t * GROUPS_PER_TOKEN + c0 / QUANT_GROUP + g] = 0u;
  }
}

fn quantize_by_item(base: u32, lid: u32) {
  if (FULL_SOURCES && !SLOT_SOURCES) {
    for (var t = 0u; t < job.count; t++) {
      rows[t] = row_offset(kept_token(t));
    }
  }
  if (QUAD_K_ITEMS) {
    // The workgroup is one quad and works on one K item at a time (shaders/compact_k_quad.wgsl).
    let lane = quad_lane(lid);
    for (var i = 0u; i < K_ITEMS; i++) {
      quantize_k_quad(base, i / K_COLUMNS, (i % K_COLUMNS) * K_SPAN, lane);
    }
  } else {
    for (var i = lid; i < K_ITEMS; i += WORKGROUP_SIZE) {
      quantize_k_item(base, i / K_COLUMNS, (i % K_COLUMNS) * K_SPAN);
    }
  }
  let filled_items = job.count * V_COLUMNS;
  for (var i = lid; i < filled_items; i += WORKGROUP_SIZE) {
    quantize_v_item(base, i / V_COLUMNS, (i % V_COLUMNS) * V_SPAN);
  }
  for (var i = filled_items + lid; i < V_ITEMS; i += WORKGROUP_SIZE) {
    zero_v_item(base, i / V_COLUMNS, (i % V_COLUMNS) * V_SPAN);
  }
}

// ---- Quantized destinations, any layout: one word at a time ----

fn kept_value(token: KeptToken, d: u32, v_part: bool) -> f32 {
  let start = select(d & ~1u, d & ~3u, QUADS_ALIGNED);
  let x = kept_quad(token, start, v_part);
  return array<f32, 4>(x.x, x.y, x.z, x.w)[d - start];
}

// K parameter word of token group `group`, channel d (0 for a group without filled tokens).
fn k_param(group: u32, d: u32) -> u32 {
  let t0 = group * QUANT_GROUP;
  let t1 = min(t0 + QUANT_GROUP, job.count);
  var lo = 3.4e38;
  var hi = -3.4e38;
  for (var t = t0; t < t1; t++) {
    let x = kept_value(kept_token(t), d, false);
    lo = min(lo, x);
    hi = max(hi, x);
  }
  return select(0u, param_word(lo, hi), t1 > t0);
}

// V parameter word of channel group `group` of a filled token.
fn v_param(token: KeptToken, group: u32) -> u32 {
  var lo = 3.4e38;
  var hi = -3.4e38;
  for (var d = group * QUANT_GROUP; d < (group + 1u) * QUANT_GROUP; d++) {
    let x = kept_value(token, d, true);
    lo = min(lo, x);
    hi = max(hi, x);
  }
  return param_word(lo, hi);
}

fn quantize_by_word(base: u32, lid: u32) {
  for (var i = lid; i < (BLOCK_SIZE / QUANT_GROUP) * HEAD_DIM; i += WORKGROUP_SIZE) {
    quant_pool[base + QUANT_KP_OFFSET + i] = k_param(i / HEAD_DIM, i % HEAD_DIM);
  }
  for (var i = lid; i < BLOCK_SIZE * GROUPS_PER_TOKEN; i += WORKGROUP_SIZE) {
    let t = i / GROUPS_PER_TOKEN;
    var word = 0u;
    if (t < job.count) {
      word = v_param(kept_token(t), i % GROUPS_PER_TOKEN);
    }
    quant_pool[base + QUANT_VP_OFFSET + i] = word;
  }
  // Each code word recomputes the parameters of its values' groups: no thread reads another's output.
  for (var w = lid; w < BLOCK_SIZE * HEAD_DIM / VALUES_PER_WORD; w += WORKGROUP_SIZE) {
    var k_word = 0u;
    var v_word = 0u;
    for (var j = 0u; j < VALUES_PER_WORD; j++) {
      let i = w * VALUES_PER_WORD + j;
      let t = i / HEAD_DIM;
      let d = i % HEAD_DIM;
      if (t < job.count) {
        let token = kept_token(t);
        k_word |= quant_code(kept_value(token, d, false), k_param(t / QUANT_GROUP, d)) << (j * QUANT_BITS);
        v_word |= quant_code(kept_value(token, d, true), v_param(token, d / QUANT_GROUP)) << (j * QUANT_BITS);
      }
    }
    quant_pool[base + w] = k_word;
    quant_pool[base + QUANT_V_OFFSET + w] = v_word;
  }
}

fn write_quant(base: u32, lid: u32) {
  if (QUANT_WHOLE_WORDS) {
    quantize_by_item(base, lid);
  } else {
    quantize_by_word(base, lid);
  }
  for (var t = lid; t < BLOCK_SIZE; t += WORKGROUP_SIZE) {
    var pos = 0u;
    if (t < job.count) {
      pos = kept_position(kept_token(t));
    }
    quant_pool[base + QUANT_POS_OFFSET + t] = pos;
  }
}

// ---- The MERGED_ROWS pass ----

// After an unmerged compaction of the same jobs: the V of each filled token whose merged row was written,
// encoded again from that row (a V item holds one token's words and parameters, and a full row's words are the
// token's alone); K, positions and the other tokens stay as the compaction wrote them. The loops run once per
// merged token, so a job that merged nothing costs one masked pass of their bodies.
fn write_merged_rows(dest: u32, lid: u32) {
  let filled = select((1u << job.count) - 1u, 0xffffffffu, job.count >= 32u);
  let quant = HAS_QUANT && kv_is_quant(dest);
  for (var rest = job_merged & filled; rest != 0u; rest &= rest - 1u) {
    let t = firstTrailingBit(rest);
    if (quant) {
      let base = kv_block(dest) * QUANT_WORDS_PER_BLOCK;
      for (var i = lid; i < V_COLUMNS; i += WORKGROUP_SIZE) {
        quantize_v_item(base, t, i * V_SPAN);
      }
    } else if (!QUANT_DESTINATIONS) {
      let part = kv_block(dest) * FULL_WORDS_PER_BLOCK + FULL_V_OFFSET;
      for (var i = lid; i < QUADS_PER_TOKEN; i += WORKGROUP_SIZE) {
        store_full_quad(part, t, i * 4u, merged_row_quad(t, i * 4u));
      }
    }
  }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  if (index >= params.num_jobs) {
    return;
  }
  let dest = jobs[index * 6u + 1u];
  job = Job(jobs[index * 6u], min(jobs[index * 6u + 2u], BLOCK_SIZE), jobs[index * 6u + 3u], jobs[index * 6u + 4u], jobs[index * 6u + 5u]);
  job_merged = 0u;
  if ((MERGED_VALUES || MERGED_ROWS) && job.value_base != IDENTITY) {
    // The job's rows value_base .. value_base + count − 1 (count ≤ BLOCK_SIZE ≤ 32) span at most two mask words.
    let w = job.value_base / 32u;
    let shift = job.value_base % 32u;
    job_merged = merged_mask[w] >> shift;
    if (shift > 0u) {
      job_merged |= merged_mask[w + 1u] << (32u - shift);
    }
  }
  if (MERGED_ROWS) {
    write_merged_rows(dest, lid);
  } else if (HAS_QUANT && kv_is_quant(dest)) {
    write_quant(kv_block(dest) * QUANT_WORDS_PER_BLOCK, lid);
  } else if (!QUANT_DESTINATIONS) {
    // (The QUANT_DESTINATIONS variant compiles the full writer out: a full destination there stays unwritten.)
    write_full(kv_block(dest) * FULL_WORDS_PER_BLOCK, lid);
  }
}
