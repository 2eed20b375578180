// What the attention-statistics kernels share (not a kernel itself; included before shaders/accumulate_attention.wgsl,
// shaders/flash_decode_stats.wgsl and shaders/prefill_stats.wgsl): which (segment, KV head, token tile) a
// workgroup serves, and the read-modify-write of a token's Σp, Σp² and visible-query count. The including kernel
// declares `params` (with layer, seq_slots, max_tokens), `segments` ([num_segments][3]: slot, first query,
// queries) and the three statistics buffers. Each token is written by exactly one thread of one dispatch (a slot
// appears in one segment), which is what makes the += race-free without atomics.

// One workgroup of a statistics dispatch: KV head, tile of tokens, the cache row they index, and the segment's
// queries (first, count).
struct StatsGroup {
  kv_head: u32,
  tile: u32,
  row: u32,
  first: u32,
  count: u32,
}

// Workgroups run (segment, KV head, tile) in that order, `tiles` tiles per (segment, KV head).
fn stats_group(group_index: u32, tiles: u32) -> StatsGroup {
  let segment = group_index / (KV_HEADS * tiles);
  let kv_head = (group_index / tiles) % KV_HEADS;
  let slot = segments[segment * 3u];
  let row = (params.layer * params.seq_slots + slot) * KV_HEADS + kv_head;
  return StatsGroup(kv_head, group_index % tiles, row, segments[segment * 3u + 1u], segments[segment * 3u + 2u]);
}

// Adds one token's increments (logical index t of cache row `row`) to the statistics.
fn add_token_stats(row: u32, t: u32, sum: f32, sq_sum: f32, seen: u32) {
  let stat = row * params.max_tokens + t;
  attn_sum[stat] += sum;
  attn_sq_sum[stat] += sq_sum;
  attn_count[stat] += f32(seen);
}
