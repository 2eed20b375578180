// SnapKV / TOVA, pass 2: per (layer of the range, kv head, logical token) of one sequence slot, the mean over
// the w window queries and the group's query heads of exp(logit − max) / Σ (the partitions of
// snapkv_lse.wgsl merged), then 1-D pooling over token order with 'same' padding (POOL_MAX: max; otherwise
// Σ / POOL_KERNEL, padding counted as zero as in avg_pool1d), then protection. A tiled product: each thread holds
// one key in registers (decoded once), the workgroup stages QUERY_TILE (query, head) pairs and their merged
// normalisers in workgroup memory, and every thread takes its dot products from there. Pooling is fused: a
// workgroup of WORKGROUP_SIZE threads computes the means of WORKGROUP_SIZE consecutive tokens and writes the
// scores of the inner WORKGROUP_SIZE − 2·POOL_RADIUS (recomputing the halo is cheaper than a second pass).
// TOVA is this kernel with w = 1 and POOL_KERNEL = 1.

@group(0) @binding(0) var<uniform> params: SnapKVParams;
@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]
@group(0) @binding(3) var<storage, read> lse: array<f32>;           // [layer_count][partitions][window][N_HEADS][2]
@group(0) @binding(4) var<storage, read> block_table: array<u32>;
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(8) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]
@group(0) @binding(9) var<storage, read_write> means: array<f32>;   // [row][max_tokens] when params.write_means

const GROUP: u32 = N_HEADS / KV_HEADS;
const POOL_KERNEL: u32 = 2u * POOL_RADIUS + 1u;
const OUT_TILE: u32 = WORKGROUP_SIZE - 2u * POOL_RADIUS;
// Channels as vec4 (zero-padded past HEAD_DIM), as in snapkv_lse.wgsl.
const VEC: u32 = (HEAD_DIM + 3u) / 4u;

// The tile rounded up to whole groups of 4 pairs (slots past the staged ones are skipped): each key vec4 read
// from registers serves 4 queries.
const QUERY_SLOTS: u32 = (QUERY_TILE + 3u) / 4u * 4u;

var<workgroup> q_tile: array<vec4<f32>, QUERY_SLOTS * VEC>;
// Per staged pair: (max, 1/Σ) of its merged normaliser, and its query's position.
var<workgroup> norm_tile: array<vec2<f32>, QUERY_SLOTS>;
var<workgroup> qpos_tile: array<u32, QUERY_SLOTS>;
var<workgroup> mean_shared: array<f32, WORKGROUP_SIZE>;

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
  let out_start = (group_index % tiles) * OUT_TILE;
  let base = layer * params.seq_slots + params.slot;
  let row = base * KV_HEADS + kv_head;
  let len = context_lens[row];
  // Uniform per workgroup (row depends only on the workgroup), so returning before the barriers is allowed.
  if (out_start >= len) {
    return;
  }
  // Thread lid computes the mean of token out_start − R + lid (unsigned: below 0 it wraps past len = padding).
  let t_mean = out_start + lid - POOL_RADIUS;
  let has_token = out_start + lid >= POOL_RADIUS && t_mean < len;
  // Channel loops unrolled (src/kernels/compress/snapkv-unrolled.ts): the key stays in registers. A thread
  // without a token reads token 0 of its row's first block (never used: has_token masks it).
  let t_read = select(0u, t_mean, has_token);
  let key_entry = block_table[row * params.max_blocks + t_read / BLOCK_SIZE];
  let key = load_key(key_entry, t_read % BLOCK_SIZE);
  var pos = 0xffffffffu;
  if (has_token) {
    pos = kv_position(key_entry, t_read % BLOCK_SIZE);
  }

  let pairs = params.window * GROUP;
  var acc = 0.0;
  for (var first = 0u; first < pairs; first += QUERY_TILE) {
    for (var i = lid; i < QUERY_SLOTS * VEC; i += WORKGROUP_SIZE) {
      let pair = first + i / VEC;
      var lanes = vec4<f32>(0.0);
      if (pair < pairs && i / VEC < QUERY_TILE) {
        let ring = (params.seq_len - params.window + pair / GROUP) % params.window_cap;
        let head = kv_head * GROUP + pair % GROUP;
        let q_base = ((base * params.window_cap + ring) * N_HEADS + head) * HEAD_DIM;
        for (var c = 0u; c < 4u; c++) {
          let d = 4u * (i % VEC) + c;
          if (d < HEAD_DIM) {
            lanes[c] = window_q[q_base + d];
          }
        }
      }
      q_tile[i] = lanes;
    }
    for (var i = lid; i < QUERY_SLOTS; i += WORKGROUP_SIZE) {
      let pair = first + i;
      var norm = vec2<f32>(0.0, 0.0);
      var qpos = 0u;
      if (pair < pairs && i < QUERY_TILE) {
        let j = pair / GROUP;
        let head = kv_head * GROUP + pair % GROUP;
        qpos = window_pos[base * params.window_cap + (params.seq_len - params.window + j) % params.window_cap];
        // Merge the partitions' (max, Σ) into (max, 1/Σ); 1/Σ = 0 when nothing is visible, which makes every
        // probability of that query 0, as the reference's attention does.
        var m = MASKED_LOGIT;
        for (var p = 0u; p < params.partitions; p++) {
          m = max(m, lse[(((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u]);
        }
        var total = 0.0;
        for (var p = 0u; p < params.partitions; p++) {
          let at = (((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u;
          total += lse[at + 1u] * exp(lse[at] - m);
        }
        norm = vec2<f32>(m, select(0.0, 1.0 / total, total > 0.0));
      }
      norm_tile[i] = norm;
      qpos_tile[i] = qpos;
    }
    workgroupBarrier();
    let count = min(QUERY_TILE, pairs - first);
    for (var k = 0u; k < count; k += 4u) {
      // Four pairs at once; each logit's sum runs over v in the same order as snapkv_lse.wgsl, so both passes
      // see the same logit.
      let logits = query_dots4(key, k) * params.scale;
      for (var c = 0u; c < 4u; c++) {
        if (k + c < count && pos <= qpos_tile[k + c]) {
          let norm = norm_tile[k + c];
          acc += exp(logits[c] - norm.x) * norm.y;
        }
      }
    }
    workgroupBarrier();
  }
  mean_shared[lid] = select(0.0, acc / f32(pairs), has_token);
  workgroupBarrier();
  let t = out_start + lid;
  if (lid >= OUT_TILE || t >= len) {
    return;
  }
  // Token u sits at shared index u − out_start + R.
  let own = lid + POOL_RADIUS;
  if (params.write_means != 0u) {
    means[row * params.max_tokens + t] = mean_shared[own];
  }
  // Window [t − R, t + R] clipped to [0, len − 1].
  let lo = max(t, POOL_RADIUS) - POOL_RADIUS;
  let hi = min(t + POOL_RADIUS, len - 1u);
  var pooled = mean_shared[lo - out_start + POOL_RADIUS];
  for (var u = lo + 1u; u <= hi; u++) {
    let v = mean_shared[u - out_start + POOL_RADIUS];
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
  let pos_t = kv_position(entry, t % BLOCK_SIZE);
  scores[row * params.max_tokens + t] = protect_score(pooled, pos_t, params.sinks, params.recent_start);
}
