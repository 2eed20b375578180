// SnapKV / TOVA, pass 2: per (layer of the range, kv head, logical token) of one sequence slot, the mean over
// the w window queries and the group's query heads of exp(logit − max) / Σ (the partitions of
// snapkv_lse.wgsl merged), then 1-D pooling over token order with 'same' padding (POOL_MAX: max; otherwise
// Σ / POOL_KERNEL, padding counted as zero as in avg_pool1d), then protection. Each thread holds TOKEN_BLOCK
// keys as values (decoded once) and reads every (query, head) pair's query once for all of them
// (src/kernels/compress/snapkv-unrolled.ts says why), or, in the variant that reads the logits pass 1 stored,
// each pair's logit of each key (no key or query read at all); the pairs' merged normalisers are staged in workgroup
// memory a tile of WORKGROUP_SIZE at a time. Pooling is fused: a workgroup computes the means of
// WORKGROUP_SIZE · TOKEN_BLOCK consecutive tokens and writes the scores of all but POOL_RADIUS at each end
// (recomputing the halo is cheaper than a second pass). TOVA is this kernel with w = 1 and POOL_KERNEL = 1.

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
// Only in the variant that reads stored logits (written by pass 1; window_q is then unused).
@group(0) @binding(10) var<storage, read> logits: array<f32>;       // [layer_count][KV_HEADS][max_tokens][window · GROUP]
// Only where rows begin with tokens the scoring leaves out (merge slots): see first_token().
@group(0) @binding(11) var<storage, read> first_tokens: array<u32>; // [row]

const GROUP: u32 = N_HEADS / KV_HEADS;
const POOL_KERNEL: u32 = 2u * POOL_RADIUS + 1u;
const SPAN: u32 = WORKGROUP_SIZE * TOKEN_BLOCK;
const OUT_TILE: u32 = SPAN - 2u * POOL_RADIUS;
// Channels as vec4 (zero-padded past HEAD_DIM), as in snapkv_lse.wgsl.
const VEC: u32 = (HEAD_DIM + 3u) / 4u;

// Per staged pair: (max, 1/Σ) of its merged normaliser, and its query's position.
var<workgroup> norm_tile: array<vec2<f32>, WORKGROUP_SIZE>;
var<workgroup> qpos_tile: array<u32, WORKGROUP_SIZE>;
var<workgroup> mean_shared: array<f32, SPAN>;

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
  // Key r of this thread is token out_start − R + r·WORKGROUP_SIZE + lid (unsigned: below 0 it wraps past
  // len = padding), at shared index r·WORKGROUP_SIZE + lid. A slot without a token reads token 0 of its row's
  // first block and gets position 0xffffffff, which no query sees.
  // Tokens before `first` (merge slots) count as padding: no mean, outside the pooling window.
  let first = first_token(row);
  var entries: array<u32, TOKEN_BLOCK>;
  var slots: array<u32, TOKEN_BLOCK>;
  var positions: array<u32, TOKEN_BLOCK>;
  var tokens: array<u32, TOKEN_BLOCK>;
  for (var r = 0u; r < TOKEN_BLOCK; r++) {
    let t_mean = out_start + r * WORKGROUP_SIZE + lid - POOL_RADIUS;
    let has_token = out_start + r * WORKGROUP_SIZE + lid >= POOL_RADIUS && t_mean < len && t_mean >= first;
    let t_read = select(0u, t_mean, has_token);
    entries[r] = block_table[row * params.max_blocks + t_read / BLOCK_SIZE];
    slots[r] = t_read % BLOCK_SIZE;
    tokens[r] = t_read;
    positions[r] = select(0xffffffffu, kv_position(entries[r], slots[r]), has_token);
  }
  let keys = load_keys(entries, slots, positions, tokens);

  let pairs = params.window * GROUP;
  let logit_head = (l * KV_HEADS + kv_head) * params.max_tokens * pairs;
  var acc: array<f32, TOKEN_BLOCK>;
  for (var first = 0u; first < pairs; first += WORKGROUP_SIZE) {
    let pair = first + lid;
    var norm = vec2<f32>(0.0, 0.0);
    var qpos = 0u;
    if (pair < pairs) {
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
    norm_tile[lid] = norm;
    qpos_tile[lid] = qpos;
    workgroupBarrier();
    let count = min(WORKGROUP_SIZE, pairs - first);
    for (var k = 0u; k < count; k++) {
      let pair_k = first + k;
      let ring = (params.seq_len - params.window + pair_k / GROUP) % params.window_cap;
      let q_base = ((base * params.window_cap + ring) * N_HEADS + kv_head * GROUP + pair_k % GROUP) * HEAD_DIM;
      acc = pair_step(keys, q_base, logit_head + pair_k, pairs, norm_tile[k], qpos_tile[k], acc);
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < TOKEN_BLOCK; r++) {
    mean_shared[r * WORKGROUP_SIZE + lid] = select(0.0, acc[r] / f32(pairs), positions[r] != 0xffffffffu);
  }
  workgroupBarrier();
  for (var r = 0u; r < TOKEN_BLOCK; r++) {
    let at = r * WORKGROUP_SIZE + lid;
    let t = out_start + at;
    // A leading (slot) token's score and mean are the caller's: not written.
    if (at < OUT_TILE && t < len && t >= first) {
      write_score(row, t, out_start, len, first);
    }
  }
}

// Pools, protects and writes the score of token t from the means in mean_shared.
fn write_score(row: u32, t: u32, out_start: u32, len: u32, first: u32) {
  // Token u sits at shared index u − out_start + R.
  if (params.write_means != 0u) {
    // Summed over the (query, head) pairs, not averaged: the window mass in the CPU engine's unit, which merge
    // slots keeps across compactions.
    means[row * params.max_tokens + t] = mean_shared[t - out_start + POOL_RADIUS] * f32(params.window * GROUP);
  }
  // Window [t − R, t + R] clipped to [first, len − 1].
  let lo = max(max(t, POOL_RADIUS) - POOL_RADIUS, first);
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
