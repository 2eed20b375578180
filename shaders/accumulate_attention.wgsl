// Accumulates one paged-attention run into the per-token attention statistics of the cache (CONTRIBUTING.md,
// "GPU buffers of a paged cache"). One thread owns one (segment, kv head, logical token) and loops over the
// segment's queries: queries of one sequence write the same statistics, so giving each token to exactly one
// thread is what makes the read-modify-write race-free without atomics (WGSL has no float atomics).
// A segment is a run of consecutive queries of one sequence slot; the host guarantees a slot appears in at most
// one segment per dispatch.

@group(0) @binding(0) var<uniform> params: AccumulateParams;
@group(0) @binding(1) var<storage, read> probs: array<f32>;         // [n][N_HEADS][probs_stride], logical order
@group(0) @binding(2) var<storage, read> query_pos: array<u32>;     // [n]
@group(0) @binding(3) var<storage, read> segments: array<u32>;      // [num_segments][3]: slot, first query, queries
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
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
  // probs only holds probs_stride tokens per query head; a longer head is a caller error, never an OOB read.
  let len = min(context_lens[row], params.probs_stride);
  if (t >= len) {
    return;
  }
  let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
  // Visibility by position, not by p > 0: a visible token's probability may underflow to exactly 0.
  let pos = kv_position(entry, t % BLOCK_SIZE);
  var sum = 0.0;
  var sq_sum = 0.0;
  var seen = 0u;
  for (var i = group.first; i < group.first + group.count; i++) {
    if (pos > query_pos[i]) {
      continue;
    }
    seen += 1u;
    let base = (i * N_HEADS + kv_head * GROUP) * params.probs_stride + t;
    for (var g = 0u; g < GROUP; g++) {
      let p = probs[base + g * params.probs_stride];
      sum += p;
      sq_sum += p * p;
    }
  }
  add_token_stats(row, t, sum, sq_sum, seen);
}
