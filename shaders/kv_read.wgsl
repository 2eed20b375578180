// Reading one token of a paged KV cache (not a kernel itself; prepended to kernels that read the cache).
// The including kernel declares `full_pool` and `quant_pool` as storage arrays of u32. A block-table entry is a
// block index, top bit set when the block lives in the quantized pool (src/cache/layout.ts).

const QUANT_POOL_BIT: u32 = 0x80000000u;
const MASKED_LOGIT: f32 = -3.0e38f;

fn kv_is_quant(entry: u32) -> bool {
  return (entry & QUANT_POOL_BIT) != 0u;
}

fn kv_block(entry: u32) -> u32 {
  return entry & 0x7fffffffu;
}

fn full_value(block: u32, slot: u32, d: u32, v_part: bool) -> f32 {
  let base = block * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part);
  let i = slot * HEAD_DIM + d;
  if (FULL_F16) {
    let pair = unpack2x16float(full_pool[base + i / 2u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
  }
  return bitcast<f32>(full_pool[base + i]);
}

fn quant_value(block: u32, slot: u32, d: u32, v_part: bool) -> f32 {
  let base = block * QUANT_WORDS_PER_BLOCK;
  let bit = (slot * HEAD_DIM + d) * QUANT_BITS;
  let word = quant_pool[base + select(0u, QUANT_V_OFFSET, v_part) + bit / 32u];
  let code = (word >> (bit % 32u)) & ((1u << QUANT_BITS) - 1u);
  var param_index: u32;
  if (v_part) {
    param_index = QUANT_VP_OFFSET + slot * (HEAD_DIM / QUANT_GROUP) + d / QUANT_GROUP;
  } else {
    param_index = QUANT_KP_OFFSET + (slot / QUANT_GROUP) * HEAD_DIM + d;
  }
  let scale_zero = unpack2x16float(quant_pool[base + param_index]);
  return f32(code) * scale_zero.x + scale_zero.y;
}

// Eight consecutive channels of a token, as two quads: the merge and compaction kernels read f16 rows eight
// channels a load (one vec4<u32>).
struct Octet {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

// Channel d of token `slot` of the block that `entry` names; K when v_part is false, V otherwise.
fn kv_value(entry: u32, slot: u32, d: u32, v_part: bool) -> f32 {
  if (HAS_QUANT && kv_is_quant(entry)) {
    return quant_value(kv_block(entry), slot, d, v_part);
  }
  return full_value(kv_block(entry), slot, d, v_part);
}

// Original position of token `slot` of the block.
fn kv_position(entry: u32, slot: u32) -> u32 {
  if (HAS_QUANT && kv_is_quant(entry)) {
    return quant_pool[kv_block(entry) * QUANT_WORDS_PER_BLOCK + QUANT_POS_OFFSET + slot];
  }
  return full_pool[kv_block(entry) * FULL_WORDS_PER_BLOCK + FULL_POS_OFFSET + slot];
}
