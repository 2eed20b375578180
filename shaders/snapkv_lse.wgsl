// SnapKV / TOVA, pass 1: partial softmax normalisers of every (layer of the range, window query, query head)
// over one token partition of its KV head, for one sequence slot. One workgroup per (layer, KV head, chunk of
// WORKGROUP_SIZE · PAIR_BLOCK (query, head) pairs of that KV head's group, partition); each thread holds
// PAIR_BLOCK consecutive pairs' queries as values and reads every key of the partition once for all of them
// (src/kernels/compress/snapkv-unrolled.ts says why that, not a workgroup-memory tile, is what pays). Online
// softmax per pair and no barrier, so threads without pairs leave at once.
// A window query sees tokens whose original position is ≤ its own.
// Output: lse[layer][partition][window row][head] = (max logit, Σ exp(logit − max)) over the partition; the
// score pass merges the partitions (max MASKED_LOGIT and Σ 0 where nothing is visible). The variant that stores
// logits also writes every pair's logit of every token (pairs of a KV head j-major, as below).
// The w rows used are the newest: positions seq_len − w .. seq_len − 1, at ring index position mod window_cap.

@group(0) @binding(0) var<uniform> params: SnapKVParams;
@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]
@group(0) @binding(3) var<storage, read> block_table: array<u32>;
@group(0) @binding(4) var<storage, read> context_lens: array<u32>;
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;     // [layer_count][partitions][window][N_HEADS][2]
// Only in the variant that stores logits (`storedLogits` in the host): pass 2 then reads them back.
@group(0) @binding(8) var<storage, read_write> logits: array<f32>;  // [layer_count][KV_HEADS][max_tokens][window · GROUP]
// Only where rows begin with tokens the scoring leaves out (merge slots): see first_token().
@group(0) @binding(9) var<storage, read> first_tokens: array<u32>;  // [row]

const GROUP: u32 = N_HEADS / KV_HEADS;
// Channels as vec4 (zero-padded past HEAD_DIM): a quarter of the loop trips and address arithmetic, and dot().
const VEC: u32 = (HEAD_DIM + 3u) / 4u;
const CHUNK_PAIRS: u32 = WORKGROUP_SIZE * PAIR_BLOCK;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let pairs = params.window * GROUP;
  let chunks = (pairs + CHUNK_PAIRS - 1u) / CHUNK_PAIRS;
  if (group_index >= params.layer_count * KV_HEADS * chunks * params.partitions) {
    return;
  }
  let p = group_index % params.partitions;
  let chunk = (group_index / params.partitions) % chunks;
  let kv_head = (group_index / (params.partitions * chunks)) % KV_HEADS;
  let l = group_index / (params.partitions * chunks * KV_HEADS);
  // This thread's pairs: PAIR_BLOCK consecutive ones, ordered j-major (window row, then head of the group).
  let first_pair = chunk * CHUNK_PAIRS + lid * PAIR_BLOCK;
  if (first_pair >= pairs) {
    return;
  }
  let layer = params.layer + l;
  let base = layer * params.seq_slots + params.slot;
  let row = base * KV_HEADS + kv_head;
  let len = context_lens[row];
  let end = min(len, p * params.part_tokens + params.part_tokens);
  let start = max(p * params.part_tokens, first_token(row));

  // Pairs past the last are computed as the last one (the same reads) and not written.
  var q_bases: array<u32, PAIR_BLOCK>;
  var positions: array<u32, PAIR_BLOCK>;
  for (var r = 0u; r < PAIR_BLOCK; r++) {
    let pair = min(first_pair + r, pairs - 1u);
    let ring = (params.seq_len - params.window + pair / GROUP) % params.window_cap;
    positions[r] = window_pos[base * params.window_cap + ring];
    q_bases[r] = ((base * params.window_cap + ring) * N_HEADS + kv_head * GROUP + pair % GROUP) * HEAD_DIM;
  }
  let queries = load_queries(q_bases, positions);

  // Token-major, so that a workgroup's stores at one token are contiguous and pages are walked in order.
  let logit_base = (l * KV_HEADS + kv_head) * params.max_tokens * pairs + first_pair;
  let states = partition_states(queries, row, start, end, logit_base, pairs, pairs - first_pair);
  for (var r = 0u; r < PAIR_BLOCK; r++) {
    let pair = first_pair + r;
    if (pair < pairs) {
      let j = pair / GROUP;
      let head = kv_head * GROUP + pair % GROUP;
      let out = (((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u;
      lse[out] = states[r].x;
      lse[out + 1u] = states[r].y;
    }
  }
}
