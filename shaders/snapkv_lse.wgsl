// SnapKV / TOVA, pass 1: partial softmax normalisers of every (layer of the range, window query, query head)
// over one token partition of its KV head, for one sequence slot, as a tiled product of the group's window
// queries × the partition's keys. One workgroup per (layer, KV head, chunk of WORKGROUP_SIZE (query, head)
// pairs of that KV head's group, partition): each thread holds one query in registers; the workgroup decodes a
// tile of KEY_TILE keys into workgroup memory ONCE and every thread takes its dot products from there (before,
// every (query, head) decoded the whole head again). Online softmax per thread, so no reduction is needed.
// A window query sees tokens whose original position is ≤ its own.
// Output: lse[layer][partition][window row][head] = (max logit, Σ exp(logit − max)) over the partition; the
// score pass merges the partitions (max MASKED_LOGIT and Σ 0 where nothing is visible).
// The w rows used are the newest: positions seq_len − w .. seq_len − 1, at ring index position mod window_cap.

@group(0) @binding(0) var<uniform> params: SnapKVParams;
@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]
@group(0) @binding(3) var<storage, read> block_table: array<u32>;
@group(0) @binding(4) var<storage, read> context_lens: array<u32>;
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;     // [layer_count][partitions][window][N_HEADS][2]

const GROUP: u32 = N_HEADS / KV_HEADS;
// Channels as vec4 (zero-padded past HEAD_DIM): a quarter of the loop trips and address arithmetic, and dot().
const VEC: u32 = (HEAD_DIM + 3u) / 4u;

// The tile rounded up to whole groups of 4 keys (the slots past KEY_TILE are masked): each query vec4 read from
// registers serves 4 keys.
const KEY_SLOTS: u32 = (KEY_TILE + 3u) / 4u * 4u;

var<workgroup> key_tile: array<vec4<f32>, KEY_SLOTS * VEC>;
var<workgroup> pos_tile: array<u32, KEY_SLOTS>;

fn online_add(state: vec2<f32>, logit: f32) -> vec2<f32> {
  // (running max, running Σ exp(logit − max))
  if (logit > state.x) {
    return vec2<f32>(logit, state.y * exp(state.x - logit) + 1.0);
  }
  return vec2<f32>(state.x, state.y + exp(logit - state.x));
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  let pairs = params.window * GROUP;
  let chunks = (pairs + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
  if (group_index >= params.layer_count * KV_HEADS * chunks * params.partitions) {
    return;
  }
  let p = group_index % params.partitions;
  let chunk = (group_index / params.partitions) % chunks;
  let kv_head = (group_index / (params.partitions * chunks)) % KV_HEADS;
  let l = group_index / (params.partitions * chunks * KV_HEADS);
  let layer = params.layer + l;
  let base = layer * params.seq_slots + params.slot;
  let row = base * KV_HEADS + kv_head;
  let len = context_lens[row];
  let start = p * params.part_tokens;
  let end = min(len, start + params.part_tokens);

  // This thread's (window row j, query head): pairs are ordered j-major so a chunk covers whole rows.
  let pair = chunk * WORKGROUP_SIZE + lid;
  let in_range = pair < pairs;
  let j = min(pair, pairs - 1u) / GROUP;
  let head = kv_head * GROUP + min(pair, pairs - 1u) % GROUP;
  let ring = (params.seq_len - params.window + j) % params.window_cap;
  let qpos = window_pos[base * params.window_cap + ring];
  let q_base = ((base * params.window_cap + ring) * N_HEADS + head) * HEAD_DIM;
  // Channel loops unrolled (src/kernels/compress/snapkv-unrolled.ts): q stays in registers.
  let q = load_query(q_base);

  var state = vec2<f32>(MASKED_LOGIT, 0.0);
  // Uniform per workgroup: every thread runs the same tiles, so the barriers below are in uniform control flow.
  for (var tile = start; tile < end; tile += KEY_TILE) {
    for (var i = lid; i < KEY_SLOTS * VEC; i += WORKGROUP_SIZE) {
      let t = tile + i / VEC;
      var lanes = vec4<f32>(0.0);
      if (t < end && i / VEC < KEY_TILE) {
        let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
        for (var c = 0u; c < 4u; c++) {
          let d = 4u * (i % VEC) + c;
          if (d < HEAD_DIM) {
            lanes[c] = kv_value(entry, t % BLOCK_SIZE, d, false);
          }
        }
      }
      key_tile[i] = lanes;
    }
    for (var i = lid; i < KEY_SLOTS; i += WORKGROUP_SIZE) {
      let t = tile + i;
      var pos = 0xffffffffu;
      if (t < end && i < KEY_TILE) {
        pos = kv_position(block_table[row * params.max_blocks + t / BLOCK_SIZE], t % BLOCK_SIZE);
      }
      pos_tile[i] = pos;
    }
    workgroupBarrier();
    for (var k = 0u; k < KEY_SLOTS; k += 4u) {
      // Four keys at once; each logit's sum runs over v in the same order as snapkv_score.wgsl, so both passes
      // see the same logit.
      let logits = key_dots4(q, k) * params.scale;
      for (var c = 0u; c < 4u; c++) {
        if (pos_tile[k + c] <= qpos) {
          state = online_add(state, logits[c]);
        }
      }
    }
    workgroupBarrier();
  }
  if (in_range) {
    let out = (((l * params.partitions + p) * params.window + j) * N_HEADS + head) * 2u;
    lse[out] = state.x;
    lse[out + 1u] = state.y;
  }
}
