// Attention statistics of a tiled prefill run (shaders/prefill_attention.wgsl), without a probability buffer:
// one workgroup owns STATS_KEYS consecutive keys of one (segment, KV head), stages them in workgroup memory, and
// streams the segment's queries through in chunks of STATS_QUERIES (every head of the GQA group), recomputing
// each logit and its probability under the query's final normaliser exp(logit - lse). p, p² and the number of
// queries that see the key add up in registers, are reduced in workgroup memory, and each key's statistics are
// written once by its one workgroup (a slot appears in one segment per dispatch), so no atomics are needed.

@group(0) @binding(0) var<uniform> params: PrefillStatsParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;       // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> segments: array<u32>;      // [num_segments][3]: slot, first query, queries
@group(0) @binding(3) var<storage, read> block_table: array<u32>;
@group(0) @binding(4) var<storage, read> context_lens: array<u32>;
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read> row_lse: array<f32>;       // [n][N_HEADS + 1], from the attention pass
@group(0) @binding(8) var<storage, read_write> attn_sum: array<f32>;    // [row][max_tokens]
@group(0) @binding(9) var<storage, read_write> attn_sq_sum: array<f32>; // [row][max_tokens]
@group(0) @binding(10) var<storage, read_write> attn_count: array<f32>; // [row][max_tokens]

const GROUP: u32 = N_HEADS / KV_HEADS;
const ROWS: u32 = STATS_QUERIES * GROUP;
const LANES_PER_KEY: u32 = WORKGROUP_SIZE / STATS_KEYS;

var<workgroup> k_tile: array<f32, STATS_KEYS * HEAD_DIM>;
var<workgroup> q_rows: array<f32, ROWS * HEAD_DIM>;         // scaled queries of the chunk
var<workgroup> q_lse: array<f32, ROWS>;
var<workgroup> q_pos: array<u32, STATS_QUERIES>;
var<workgroup> key_pos: array<u32, STATS_KEYS>;
var<workgroup> reduce_sum: array<f32, WORKGROUP_SIZE>;
var<workgroup> reduce_sq: array<f32, WORKGROUP_SIZE>;
var<workgroup> reduce_count: array<u32, WORKGROUP_SIZE>;
var<workgroup> segment_shared: vec4<u32>;                   // first query, query count, len

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let tiles = params.key_tiles;
  if (group_index >= params.num_segments * KV_HEADS * tiles) {
    return;
  }
  let group = stats_group(group_index, tiles);
  let kv_head = group.kv_head;
  let row = group.row;
  let t0 = group.tile * STATS_KEYS;
  if (lid == 0u) {
    segment_shared = vec4<u32>(group.first, group.count, context_lens[row], 0u);
  }
  let seg = workgroupUniformLoad(&segment_shared);
  let first = seg.x;
  let end = seg.x + seg.y;
  let len = seg.z;
  if (t0 >= len) {
    return; // uniform: the whole workgroup leaves
  }

  for (var e = lid; e < STATS_KEYS * HEAD_DIM; e += WORKGROUP_SIZE) {
    let t = t0 + e / HEAD_DIM;
    var value = 0.0;
    if (t < len) {
      value = kv_value(block_table[row * params.max_blocks + t / BLOCK_SIZE], t % BLOCK_SIZE, e % HEAD_DIM, false);
    }
    k_tile[e] = value;
  }
  for (var k = lid; k < STATS_KEYS; k += WORKGROUP_SIZE) {
    let t = t0 + k;
    var pos = 0u;
    if (t < len) {
      pos = kv_position(block_table[row * params.max_blocks + t / BLOCK_SIZE], t % BLOCK_SIZE);
    }
    key_pos[k] = pos;
  }

  let key = lid % STATS_KEYS;
  let lane = lid / STATS_KEYS;
  let key_valid = t0 + key < len;
  var sum = 0.0;
  var sq_sum = 0.0;
  var seen = 0u;
  for (var c0 = first; c0 < end; c0 += STATS_QUERIES) {
    workgroupBarrier(); // the previous chunk's reads are done (and, the first time, k_tile is staged)
    for (var e = lid; e < ROWS * HEAD_DIM; e += WORKGROUP_SIZE) {
      let r = e / HEAD_DIM;
      let qi = c0 + r / GROUP;
      var value = 0.0;
      if (qi < end) {
        value = queries[(qi * N_HEADS + kv_head * GROUP + r % GROUP) * HEAD_DIM + e % HEAD_DIM] * params.scale;
      }
      q_rows[e] = value;
    }
    for (var r = lid; r < ROWS; r += WORKGROUP_SIZE) {
      let qi = c0 + r / GROUP;
      var lse = 0.0;
      if (qi < end) {
        lse = row_lse[qi * (N_HEADS + 1u) + kv_head * GROUP + r % GROUP];
      }
      q_lse[r] = lse;
    }
    for (var i = lid; i < STATS_QUERIES; i += WORKGROUP_SIZE) {
      var pos = 0u;
      if (c0 + i < end) {
        pos = bitcast<u32>(row_lse[(c0 + i) * (N_HEADS + 1u) + N_HEADS]);
      }
      q_pos[i] = pos;
    }
    workgroupBarrier();
    if (key_valid && lane < LANES_PER_KEY) {
      let kpos = key_pos[key];
      for (var r = lane; r < ROWS; r += LANES_PER_KEY) {
        let qi = r / GROUP;
        // Visibility by position, not by p > 0: a visible key's probability may underflow to exactly 0.
        if (c0 + qi >= end || kpos > q_pos[qi]) {
          continue;
        }
        var dot = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
          dot = fma(q_rows[r * HEAD_DIM + d], k_tile[key * HEAD_DIM + d], dot);
        }
        let p = exp(dot - q_lse[r]);
        sum += p;
        sq_sum += p * p;
        if (r % GROUP == 0u) {
          seen += 1u;
        }
      }
    }
  }
  reduce_sum[lid] = sum;
  reduce_sq[lid] = sq_sum;
  reduce_count[lid] = seen;
  workgroupBarrier();
  if (lid < STATS_KEYS && key_valid) {
    var total = 0.0;
    var total_sq = 0.0;
    var total_seen = 0u;
    for (var j = 0u; j < LANES_PER_KEY; j++) {
      total += reduce_sum[lid + j * STATS_KEYS];
      total_sq += reduce_sq[lid + j * STATS_KEYS];
      total_seen += reduce_count[lid + j * STATS_KEYS];
    }
    add_token_stats(row, t0 + lid, total, total_sq, total_seen);
  }
}
