// Scores of the policies that need one pass over a head's tokens and no attention recomputation (h2o,
// kvcompress, knorm, streaming, random, ...). The policy supplies
//
//   fn token_score(token: ScoredToken) -> f32
//
// (KernelSpec.functions, from the policy's GPU plan); this kernel gathers what it may read and applies the
// protection (sinks, recent window). One thread per (layer of the range, kv head, logical token) of one
// sequence slot, no barriers. READS_ATTN_SUM / READS_ATTN_SQ_SUM / READS_ATTN_COUNT come from the statistics the
// plan declares: a statistic it did not declare reads as 0 and its binding holds a placeholder.

@group(0) @binding(0) var<uniform> params: ScoreStatsParams;
@group(0) @binding(1) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(2) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]
@group(0) @binding(3) var<storage, read> full_pool: array<u32>;
@group(0) @binding(4) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(5) var<storage, read> attn_sum: array<f32>;      // [row][max_tokens]
@group(0) @binding(6) var<storage, read> attn_sq_sum: array<f32>;   // [row][max_tokens]
@group(0) @binding(7) var<storage, read> attn_count: array<f32>;    // [row][max_tokens]
@group(0) @binding(8) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]

// One cached token as token_score() sees it. Read its key and value channels with token_key / token_value.
struct ScoredToken {
  layer: u32,
  kv_head: u32,
  // Logical index in the head, 0 = oldest cached token.
  index: u32,
  // Original position in the sequence.
  position: u32,
  // The run's seed (as u32 bits).
  seed: u32,
  // Accumulated attention statistics (ScoreInput.attnSum, attnSqSum, attnCount on the CPU).
  attn_sum: f32,
  attn_sq_sum: f32,
  attn_count: f32,
  // Where the token lives: block-table entry and slot in the block.
  entry: u32,
  block_slot: u32,
}

// Channel d (< HEAD_DIM) of the token's dequantized key.
fn token_key(token: ScoredToken, d: u32) -> f32 {
  return kv_value(token.entry, token.block_slot, d, false);
}

// Channel d (< HEAD_DIM) of the token's dequantized value.
fn token_value(token: ScoredToken, d: u32) -> f32 {
  return kv_value(token.entry, token.block_slot, d, true);
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
  let layer = params.layer + group_index / (KV_HEADS * tiles);
  let kv_head = (group_index / tiles) % KV_HEADS;
  let t = (group_index % tiles) * WORKGROUP_SIZE + lid;
  let row = (layer * params.seq_slots + params.slot) * KV_HEADS + kv_head;
  if (t >= context_lens[row]) {
    return;
  }
  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
  let s = t % BLOCK_SIZE;
  let stat = row * params.max_tokens + t;
  var token = ScoredToken(layer, kv_head, t, kv_position(entry, s), params.seed, 0.0, 0.0, 0.0, entry, s);
  if (READS_ATTN_SUM) {
    token.attn_sum = attn_sum[stat];
  }
  if (READS_ATTN_SQ_SUM) {
    token.attn_sq_sum = attn_sq_sum[stat];
  }
  if (READS_ATTN_COUNT) {
    token.attn_count = attn_count[stat];
  }
  scores[stat] = protect_score(token_score(token), token.position, params.sinks, params.recent_start);
}
