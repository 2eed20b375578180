// SnapKV / TOVA, pass 2: per (layer of the range, kv head, logical token) of one sequence slot, the mean over
// the w window queries and the group's query heads of exp(logit − max) / Σ (normaliser from snapkv_lse.wgsl),
// then 1-D pooling over token order with 'same' padding (POOL_MAX: max; otherwise Σ / POOL_KERNEL, padding
// counted as zero as in avg_pool1d), then protection. Pooling is fused: a workgroup computes the means of its
// tile plus POOL_RADIUS tokens each side into workgroup memory (recomputing the halo is cheaper than a
// scratch buffer and a second pass), then pools from there. TOVA is this kernel with w = 1 and POOL_KERNEL = 1.

@group(0) @binding(0) var<uniform> params: SnapKVParams;
@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]
@group(0) @binding(3) var<storage, read> lse: array<f32>;           // [layer_count][window][N_HEADS][2]
@group(0) @binding(4) var<storage, read> block_table: array<u32>;
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(8) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]
@group(0) @binding(9) var<storage, read_write> means: array<f32>;   // [row][max_tokens] when params.write_means

const GROUP: u32 = N_HEADS / KV_HEADS;
const POOL_KERNEL: u32 = 2u * POOL_RADIUS + 1u;
const TILE_SPAN: u32 = WORKGROUP_SIZE + 2u * POOL_RADIUS;

var<workgroup> mean_shared: array<f32, TILE_SPAN>;

// Mean probability of token t over the window queries and the group's heads (0 where no window query sees it).
fn token_mean(l: u32, layer: u32, kv_head: u32, row: u32, t: u32) -> f32 {
  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
  let s = t % BLOCK_SIZE;
  let pos = kv_position(entry, s);
  let base = layer * params.seq_slots + params.slot;
  // The key is decoded once and reused by all w × group queries (decoding dominates on quantized blocks).
  var key: array<f32, HEAD_DIM>;
  for (var d = 0u; d < HEAD_DIM; d++) {
    key[d] = kv_value(entry, s, d, false);
  }
  var acc = 0.0;
  for (var j = 0u; j < params.window; j++) {
    let ring = (params.seq_len - params.window + j) % params.window_cap;
    if (pos > window_pos[base * params.window_cap + ring]) {
      continue;
    }
    for (var g = 0u; g < GROUP; g++) {
      let head = kv_head * GROUP + g;
      let q_base = ((base * params.window_cap + ring) * N_HEADS + head) * HEAD_DIM;
      // Same expression as snapkv_lse.wgsl so both passes see the same logit.
      var dot = 0.0;
      for (var d = 0u; d < HEAD_DIM; d++) {
        dot += window_q[q_base + d] * key[d];
      }
      let logit = dot * params.scale;
      let norm = ((l * params.window + j) * N_HEADS + head) * 2u;
      acc += exp(logit - lse[norm]) * lse[norm + 1u];
    }
  }
  return acc / f32(params.window * GROUP);
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let tiles = params.tiles;
  if (group_index >= params.layer_count * KV_HEADS * tiles) {
    return;
  }
  let l = group_index / (KV_HEADS * tiles);
  let layer = params.layer + l;
  let kv_head = (group_index / tiles) % KV_HEADS;
  let start = (group_index % tiles) * WORKGROUP_SIZE;
  let row = (layer * params.seq_slots + params.slot) * KV_HEADS + kv_head;
  let len = context_lens[row];
  // Uniform per workgroup (row depends only on the workgroup), so returning before the barrier is allowed.
  if (start >= len) {
    return;
  }
  for (var i = lid; i < TILE_SPAN; i += WORKGROUP_SIZE) {
    // Token start + i − POOL_RADIUS, kept unsigned: below 0 it wraps past len and counts as padding.
    let t = start + i - POOL_RADIUS;
    var mean = 0.0;
    if (start + i >= POOL_RADIUS && t < len) {
      mean = token_mean(l, layer, kv_head, row, t);
    }
    mean_shared[i] = mean;
  }
  workgroupBarrier();
  let t = start + lid;
  if (t >= len) {
    return;
  }
  if (params.write_means != 0u) {
    means[row * params.max_tokens + t] = mean_shared[lid + POOL_RADIUS];
  }
  // Window [t − R, t + R] clipped to [0, len − 1]; shared index of token u is u − start + R.
  let lo = max(t, POOL_RADIUS) - POOL_RADIUS;
  let hi = min(t + POOL_RADIUS, len - 1u);
  var pooled = mean_shared[lo - start + POOL_RADIUS];
  for (var u = lo + 1u; u <= hi; u++) {
    let v = mean_shared[u - start + POOL_RADIUS];
    if (POOL_MAX) {
      pooled = max(pooled, v);
    } else {
      pooled += v;
    }
  }
  if (!POOL_MAX) {
    pooled = pooled / f32(POOL_KERNEL);
  }
  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
  let pos = kv_position(entry, t % BLOCK_SIZE);
  scores[row * params.max_tokens + t] = protect_score(pooled, pos, params.sinks, params.recent_start);
}
