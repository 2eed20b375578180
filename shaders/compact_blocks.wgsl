// Builds fresh destination blocks from lists of source tokens: one workgroup per job. A job is
//   {row, destination block-table entry, count ≤ BLOCK_SIZE, index base, identity start, value base}
// and its token i is logical index indices[base + i] (or identity start + i when base = 0xffffffff) of `row` in
// the CURRENT block table. With a value base other than 0xffffffff, token i's value is merged[value base + i]
// (f32 [HEAD_DIM], written by shaders/merge_values.wgsl) instead of its own: merged tokens quantize like the rest. Sources are read through shaders/kv_read.wgsl (any format, dequantized to f32); the
// destination is written in its own pool's format: f32/f16 like shaders/kv_append.wgsl, or KIVI int8/int4/int2
// exactly as src/reference/block-codec.ts encodes (K per channel over G tokens, V per token over G channels).
// Every word of the destination block is written (unfilled slots, codes and parameters are 0), by exactly one
// thread, so no atomics are needed. Destinations are never sources, so reading and writing the pools in the
// same dispatch is safe.

@group(0) @binding(0) var<uniform> params: CompactBlocksParams;
@group(0) @binding(1) var<storage, read> jobs: array<u32>;         // [num_jobs][6]
@group(0) @binding(2) var<storage, read> indices: array<u32>;      // source logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;  // [row][max_blocks]
@group(0) @binding(4) var<storage, read_write> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read_write> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read> merged: array<f32>;       // [slot][HEAD_DIM] merged values

const IDENTITY: u32 = 0xffffffffu;
const LEVELS: u32 = (1u << QUANT_BITS) - 1u;
const VALUES_PER_WORD: u32 = 32u / QUANT_BITS;
const GROUPS_PER_TOKEN: u32 = HEAD_DIM / QUANT_GROUP;

// Where each destination slot's token lives now (block-table entry and slot), resolved once per job.
var<workgroup> src_entry: array<u32, BLOCK_SIZE>;
var<workgroup> src_slot: array<u32, BLOCK_SIZE>;
var<private> value_base: u32 = IDENTITY;

fn source_value(t: u32, d: u32, v_part: bool) -> f32 {
  if (v_part && value_base != IDENTITY) {
    return merged[(value_base + t) * HEAD_DIM + d];
  }
  return kv_value(src_entry[t], src_slot[t], d, v_part);
}

// KIVI parameter word pack2x16float(f16((M − m)/levels), f16(m)); pack2x16float does the f16 rounding.
fn param_word(lo: f32, hi: f32) -> u32 {
  return pack2x16float(vec2<f32>((hi - lo) / f32(LEVELS), lo));
}

fn quant_code(x: f32, word: u32) -> u32 {
  let p = unpack2x16float(word);
  if (p.x == 0.0) {
    return 0u;
  }
  let code = floor((x - p.y) / p.x + 0.5);
  return u32(clamp(code, 0.0, f32(LEVELS)));
}

fn write_full(base: u32, count: u32, lid: u32) {
  if (FULL_F16) {
    for (var w = lid; w < BLOCK_SIZE * HEAD_DIM / 2u; w += WORKGROUP_SIZE) {
      let i = 2u * w;
      let t = i / HEAD_DIM;
      let d = i % HEAD_DIM;
      var k = vec2<f32>(0.0, 0.0);
      var v = vec2<f32>(0.0, 0.0);
      if (t < count) {
        k = vec2<f32>(source_value(t, d, false), source_value(t, d + 1u, false));
        v = vec2<f32>(source_value(t, d, true), source_value(t, d + 1u, true));
      }
      full_pool[base + w] = pack2x16float(k);
      full_pool[base + FULL_V_OFFSET + w] = pack2x16float(v);
    }
  } else {
    for (var i = lid; i < BLOCK_SIZE * HEAD_DIM; i += WORKGROUP_SIZE) {
      let t = i / HEAD_DIM;
      let d = i % HEAD_DIM;
      var k = 0.0;
      var v = 0.0;
      if (t < count) {
        k = source_value(t, d, false);
        v = source_value(t, d, true);
      }
      full_pool[base + i] = bitcast<u32>(k);
      full_pool[base + FULL_V_OFFSET + i] = bitcast<u32>(v);
    }
  }
  for (var t = lid; t < BLOCK_SIZE; t += WORKGROUP_SIZE) {
    var pos = 0u;
    if (t < count) {
      pos = kv_position(src_entry[t], src_slot[t]);
    }
    full_pool[base + FULL_POS_OFFSET + t] = pos;
  }
}

fn write_quant(base: u32, count: u32, lid: u32) {
  // Phase 1: group parameters into the destination block (a group without filled tokens keeps word 0).
  for (var i = lid; i < (BLOCK_SIZE / QUANT_GROUP) * HEAD_DIM; i += WORKGROUP_SIZE) {
    let t0 = (i / HEAD_DIM) * QUANT_GROUP;
    let d = i % HEAD_DIM;
    let t1 = min(t0 + QUANT_GROUP, count);
    var word = 0u;
    if (t1 > t0) {
      var lo = source_value(t0, d, false);
      var hi = lo;
      for (var t = t0 + 1u; t < t1; t++) {
        let x = source_value(t, d, false);
        lo = min(lo, x);
        hi = max(hi, x);
      }
      word = param_word(lo, hi);
    }
    quant_pool[base + QUANT_KP_OFFSET + i] = word;
  }
  for (var i = lid; i < BLOCK_SIZE * GROUPS_PER_TOKEN; i += WORKGROUP_SIZE) {
    let t = i / GROUPS_PER_TOKEN;
    let d0 = (i % GROUPS_PER_TOKEN) * QUANT_GROUP;
    var word = 0u;
    if (t < count) {
      var lo = source_value(t, d0, true);
      var hi = lo;
      for (var d = d0 + 1u; d < d0 + QUANT_GROUP; d++) {
        let x = source_value(t, d, true);
        lo = min(lo, x);
        hi = max(hi, x);
      }
      word = param_word(lo, hi);
    }
    quant_pool[base + QUANT_VP_OFFSET + i] = word;
  }
  // Phase 2 reads the parameters back from the pool (this workgroup wrote them): no workgroup copy of the
  // block's parameters, which would not fit workgroup memory at G = 1.
  storageBarrier();
  workgroupBarrier();
  for (var w = lid; w < BLOCK_SIZE * HEAD_DIM / VALUES_PER_WORD; w += WORKGROUP_SIZE) {
    var k_word = 0u;
    var v_word = 0u;
    for (var j = 0u; j < VALUES_PER_WORD; j++) {
      let i = w * VALUES_PER_WORD + j;
      let t = i / HEAD_DIM;
      let d = i % HEAD_DIM;
      if (t < count) {
        let kp = quant_pool[base + QUANT_KP_OFFSET + (t / QUANT_GROUP) * HEAD_DIM + d];
        let vp = quant_pool[base + QUANT_VP_OFFSET + t * GROUPS_PER_TOKEN + d / QUANT_GROUP];
        k_word |= quant_code(source_value(t, d, false), kp) << (j * QUANT_BITS);
        v_word |= quant_code(source_value(t, d, true), vp) << (j * QUANT_BITS);
      }
    }
    quant_pool[base + w] = k_word;
    quant_pool[base + QUANT_V_OFFSET + w] = v_word;
  }
  for (var t = lid; t < BLOCK_SIZE; t += WORKGROUP_SIZE) {
    var pos = 0u;
    if (t < count) {
      pos = kv_position(src_entry[t], src_slot[t]);
    }
    quant_pool[base + QUANT_POS_OFFSET + t] = pos;
  }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let job = linear_workgroup_index(wid, nwg);
  if (job >= params.num_jobs) {
    return;
  }
  let row = jobs[job * 6u];
  let dest = jobs[job * 6u + 1u];
  let count = min(jobs[job * 6u + 2u], BLOCK_SIZE);
  let index_base = jobs[job * 6u + 3u];
  let identity_start = jobs[job * 6u + 4u];
  value_base = jobs[job * 6u + 5u];
  for (var i = lid; i < count; i += WORKGROUP_SIZE) {
    var logical = identity_start + i;
    if (index_base != IDENTITY) {
      logical = indices[index_base + i];
    }
    src_entry[i] = block_table[row * params.max_blocks + logical / BLOCK_SIZE];
    src_slot[i] = logical % BLOCK_SIZE;
  }
  workgroupBarrier();
  if (HAS_QUANT && kv_is_quant(dest)) {
    write_quant(kv_block(dest) * QUANT_WORDS_PER_BLOCK, count, lid);
  } else {
    write_full(kv_block(dest) * FULL_WORDS_PER_BLOCK, count, lid);
  }
}
