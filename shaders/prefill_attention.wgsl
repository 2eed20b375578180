// Tiled prefill attention (FlashAttention-2 style). One workgroup owns QUERY_TILE consecutive queries of one
// sequence slot and one KV head: ROWS = QUERY_TILE × GROUP query rows (every query head of the GQA group), so each
// K/V word loaded into workgroup memory serves all of them. Key tiles of KEY_TILE tokens stream through one
// staging buffer (K, then V of the same tile) with an online softmax per row (running max and sum); masking is
// causal by position (a key is visible iff its original position ≤ the query's). The output is written once,
// plus each row's log-sum-exp for the optional statistics pass (shaders/prefill_stats.wgsl); nothing of size
// queries × context ever leaves the workgroup.

@group(0) @binding(0) var<uniform> params: PrefillParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;       // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> query_slot: array<u32>;    // [n]; one slot per query tile
@group(0) @binding(3) var<storage, read> query_pos: array<u32>;     // [n]
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;     // [n][N_HEADS][HEAD_DIM]
// [n][N_HEADS + 1]: per (query, head) log-sum-exp of the scaled logits (MASKED_LOGIT when it saw no key), then
// the query's position as bits, so the statistics pass binds one buffer for both.
@group(0) @binding(9) var<storage, read_write> row_lse: array<f32>;

const GROUP: u32 = N_HEADS / KV_HEADS;
const ROWS: u32 = QUERY_TILE * GROUP;
const OUT_PER_THREAD: u32 = (ROWS * HEAD_DIM + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;

var<workgroup> q_tile: array<f32, ROWS * HEAD_DIM>;      // scaled queries
var<workgroup> kv_tile: array<f32, KEY_TILE * HEAD_DIM>; // K of the tile, then its V
var<workgroup> scores: array<f32, ROWS * KEY_TILE>;      // logits, then unnormalised probabilities
var<workgroup> row_max: array<f32, ROWS>;
var<workgroup> row_sum: array<f32, ROWS>;
var<workgroup> row_alpha: array<f32, ROWS>;              // rescale of the running output at this tile
var<workgroup> row_pos: array<u32, QUERY_TILE>;
var<workgroup> key_pos: array<u32, KEY_TILE>;
var<workgroup> len_shared: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  if (group_index >= params.tiles * KV_HEADS) {
    return;
  }
  let tile = group_index / KV_HEADS;
  let kv_head = group_index % KV_HEADS;
  let first_query = tile * QUERY_TILE;
  let slot = query_slot[first_query];
  let row = (params.layer * params.seq_slots + slot) * KV_HEADS + kv_head;
  let table_base = row * params.max_blocks;

  for (var e = lid; e < ROWS * HEAD_DIM; e += WORKGROUP_SIZE) {
    let r = e / HEAD_DIM;
    let qi = first_query + r / GROUP;
    var value = 0.0;
    if (qi < params.num_queries) {
      let head = kv_head * GROUP + r % GROUP;
      value = queries[(qi * N_HEADS + head) * HEAD_DIM + e % HEAD_DIM] * params.scale;
    }
    q_tile[e] = value;
  }
  for (var r = lid; r < ROWS; r += WORKGROUP_SIZE) {
    row_max[r] = MASKED_LOGIT;
    row_sum[r] = 0.0;
  }
  for (var i = lid; i < QUERY_TILE; i += WORKGROUP_SIZE) {
    // A padding row of the last tile sees nothing (position 0 still sees keys at 0: its output is dropped).
    row_pos[i] = select(0u, query_pos[first_query + i], first_query + i < params.num_queries);
  }
  if (lid == 0u) {
    len_shared = context_lens[row];
  }
  let len = workgroupUniformLoad(&len_shared);

  var acc: array<f32, OUT_PER_THREAD>;
  for (var t0 = 0u; t0 < len; t0 += KEY_TILE) {
    // K of the tile (the barrier also ends the previous tile's reads of kv_tile and scores).
    for (var e = lid; e < KEY_TILE * HEAD_DIM; e += WORKGROUP_SIZE) {
      let t = t0 + e / HEAD_DIM;
      var value = 0.0;
      if (t < len) {
        value = kv_value(block_table[table_base + t / BLOCK_SIZE], t % BLOCK_SIZE, e % HEAD_DIM, false);
      }
      kv_tile[e] = value;
    }
    for (var k = lid; k < KEY_TILE; k += WORKGROUP_SIZE) {
      let t = t0 + k;
      var pos = 0u;
      if (t < len) {
        pos = kv_position(block_table[table_base + t / BLOCK_SIZE], t % BLOCK_SIZE);
      }
      key_pos[k] = pos;
    }
    workgroupBarrier();

    for (var e = lid; e < ROWS * KEY_TILE; e += WORKGROUP_SIZE) {
      let r = e / KEY_TILE;
      let k = e % KEY_TILE;
      var logit = MASKED_LOGIT;
      if (t0 + k < len && key_pos[k] <= row_pos[r / GROUP]) {
        var dot = 0.0;
        for (var d = 0u; d < HEAD_DIM; d++) {
          dot = fma(q_tile[r * HEAD_DIM + d], kv_tile[k * HEAD_DIM + d], dot);
        }
        logit = dot;
      }
      scores[e] = logit;
    }
    workgroupBarrier();

    // Online softmax per row, while the other threads stage V over K.
    for (var r = lid; r < ROWS; r += WORKGROUP_SIZE) {
      var tile_max = MASKED_LOGIT;
      for (var k = 0u; k < KEY_TILE; k++) {
        tile_max = max(tile_max, scores[r * KEY_TILE + k]);
      }
      let old_max = row_max[r];
      let new_max = max(old_max, tile_max);
      var alpha = 1.0;
      if (old_max > MASKED_LOGIT) {
        alpha = exp(old_max - new_max);
      }
      var sum = 0.0;
      for (var k = 0u; k < KEY_TILE; k++) {
        let logit = scores[r * KEY_TILE + k];
        var p = 0.0;
        if (logit > MASKED_LOGIT) {
          p = exp(logit - new_max);
        }
        scores[r * KEY_TILE + k] = p;
        sum += p;
      }
      row_max[r] = new_max;
      row_sum[r] = row_sum[r] * alpha + sum;
      row_alpha[r] = alpha;
    }
    for (var e = lid; e < KEY_TILE * HEAD_DIM; e += WORKGROUP_SIZE) {
      let t = t0 + e / HEAD_DIM;
      var value = 0.0;
      if (t < len) {
        value = kv_value(block_table[table_base + t / BLOCK_SIZE], t % BLOCK_SIZE, e % HEAD_DIM, true);
      }
      kv_tile[e] = value;
    }
    workgroupBarrier();

    for (var j = 0u; j < OUT_PER_THREAD; j++) {
      let e = lid + j * WORKGROUP_SIZE;
      if (e < ROWS * HEAD_DIM) {
        let r = e / HEAD_DIM;
        let d = e % HEAD_DIM;
        var mix = acc[j] * row_alpha[r];
        for (var k = 0u; k < KEY_TILE; k++) {
          mix = fma(scores[r * KEY_TILE + k], kv_tile[k * HEAD_DIM + d], mix);
        }
        acc[j] = mix;
      }
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < OUT_PER_THREAD; j++) {
    let e = lid + j * WORKGROUP_SIZE;
    let r = e / HEAD_DIM;
    let qi = first_query + r / GROUP;
    if (e < ROWS * HEAD_DIM && qi < params.num_queries) {
      let total = row_sum[r];
      let head = kv_head * GROUP + r % GROUP;
      out[(qi * N_HEADS + head) * HEAD_DIM + e % HEAD_DIM] = select(0.0, acc[j] / total, total > 0.0);
    }
  }
  for (var r = lid; r < ROWS; r += WORKGROUP_SIZE) {
    let qi = first_query + r / GROUP;
    if (qi < params.num_queries) {
      let total = row_sum[r];
      let head = kv_head * GROUP + r % GROUP;
      row_lse[qi * (N_HEADS + 1u) + head] = select(MASKED_LOGIT, row_max[r] + log(total), total > 0.0);
      if (kv_head == 0u && r % GROUP == 0u) {
        row_lse[qi * (N_HEADS + 1u) + N_HEADS] = bitcast<f32>(row_pos[r / GROUP]);
      }
    }
  }
}
