// Attention statistics of a split-context attention run without a probability buffer: given each (query, head)'s
// softmax max and sum from shaders/flash_decode_merge.wgsl, recomputes a token's logits (K is read once for every
// head of the group) and adds p, p² and visibility to the cache's per-token statistics, as
// shaders/accumulate_attention.wgsl does from stored probabilities. One thread owns one (segment, kv head,
// token) and loops over the segment's queries, so the read-modify-write is race-free without atomics.

@group(0) @binding(0) var<uniform> params: StatsParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;       // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> segments: array<u32>;      // [num_segments][3]: slot, first query, queries
@group(0) @binding(3) var<storage, read> block_table: array<u32>;
@group(0) @binding(4) var<storage, read> context_lens: array<u32>;
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
// The partial pass's scratch (shaders/flash_decode_partial.wgsl): (max, Σ) per (query, head) from lse_base on,
// the query positions (as bits) from qpos_base on. One binding for both keeps the stage at 10 storage buffers.
@group(0) @binding(7) var<storage, read> partials: array<f32>;
@group(0) @binding(8) var<storage, read_write> attn_sum: array<f32>;    // [row][max_tokens]
@group(0) @binding(9) var<storage, read_write> attn_sq_sum: array<f32>; // [row][max_tokens]
@group(0) @binding(10) var<storage, read_write> attn_count: array<f32>; // [row][max_tokens]

const GROUP: u32 = N_HEADS / KV_HEADS;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let tiles = params.tiles;
  if (group_index >= params.num_segments * KV_HEADS * tiles) {
    return;
  }
  let group = stats_group(group_index, tiles);
  let kv_head = group.kv_head;
  let row = group.row;
  let t = group.tile * WORKGROUP_SIZE + lid;
  if (t >= context_lens[row]) {
    return;
  }
  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
  let s = t % BLOCK_SIZE;
  let pos = kv_position(entry, s);
  var k: array<f32, HEAD_DIM>;
  for (var d = 0u; d < HEAD_DIM; d++) {
    k[d] = kv_value(entry, s, d, false);
  }
  var sum = 0.0;
  var sq_sum = 0.0;
  var seen = 0u;
  for (var i = group.first; i < group.first + group.count; i++) {
    if (pos > bitcast<u32>(partials[params.qpos_base + i])) {
      continue;
    }
    seen += 1u;
    for (var g = 0u; g < GROUP; g++) {
      let head = i * N_HEADS + kv_head * GROUP + g;
      let ml = vec2<f32>(partials[params.lse_base + head * 2u], partials[params.lse_base + head * 2u + 1u]);
      if (ml.y == 0.0) {
        continue;
      }
      var dot = 0.0;
      for (var d = 0u; d < HEAD_DIM; d++) {
        dot = fma(queries[head * HEAD_DIM + d] * params.scale, k[d], dot);
      }
      let p = exp(dot - ml.x) / ml.y;
      sum += p;
      sq_sum += p * p;
    }
  }
  add_token_stats(row, t, sum, sq_sum, seen);
}
