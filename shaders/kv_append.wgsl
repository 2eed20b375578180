// Writes new tokens' K and V (f32, [n][KV_HEADS][HEAD_DIM], RoPE already applied) into their slots of the full
// pool, converting to the pool's format, plus each token's position. One thread per (token, head, channel pair).
// A non-finite input value (or one past f16's range in an f16 pool) sets flags[0] so the host can reject the
// batch (see PagedKvCache.appendBuffers).

@group(0) @binding(0) var<uniform> params: AppendParams;
@group(0) @binding(1) var<storage, read> keys: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read> dest_slots: array<u32>;   // [layers][n][KV_HEADS]: block × BLOCK_SIZE + slot
@group(0) @binding(4) var<storage, read> positions: array<u32>;    // [n]
@group(0) @binding(5) var<storage, read_write> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> flags: array<u32>;

const PAIRS: u32 = HEAD_DIM / 2u;

// The largest value the pool's format holds: f16 pools would turn anything past 65504 into ±Inf.
const STORABLE_MAX: f32 = select(3.4028234e38f, 65504.0f, FULL_F16);

fn finite(x: f32) -> bool {
  // NaN fails every comparison; ±Inf (and, in f16 pools, values past the f16 range) exceed STORABLE_MAX.
  return abs(x) <= STORABLE_MAX;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (index >= params.num_tokens * KV_HEADS * PAIRS) {
    return;
  }
  let pair = index % PAIRS;
  let token_head = index / PAIRS;
  let token = token_head / KV_HEADS;
  let dest = dest_slots[params.layer * params.num_tokens * KV_HEADS + token_head];
  let block = dest / BLOCK_SIZE;
  let slot = dest % BLOCK_SIZE;
  let src = token_head * HEAD_DIM + 2u * pair;
  let k = vec2<f32>(keys[src], keys[src + 1u]);
  let v = vec2<f32>(values[src], values[src + 1u]);
  if (!(finite(k.x) && finite(k.y) && finite(v.x) && finite(v.y))) {
    flags[0] = 1u;
  }
  let base = block * FULL_WORDS_PER_BLOCK;
  let i = slot * HEAD_DIM + 2u * pair;
  if (FULL_F16) {
    full_pool[base + i / 2u] = pack2x16float(k);
    full_pool[base + FULL_V_OFFSET + i / 2u] = pack2x16float(v);
  } else {
    full_pool[base + i] = bitcast<u32>(k.x);
    full_pool[base + i + 1u] = bitcast<u32>(k.y);
    full_pool[base + FULL_V_OFFSET + i] = bitcast<u32>(v.x);
    full_pool[base + FULL_V_OFFSET + i + 1u] = bitcast<u32>(v.y);
  }
  if (pair == 0u) {
    full_pool[base + FULL_POS_OFFSET + slot] = positions[token];
  }
}
