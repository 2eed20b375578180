// Scores of the policies that need one pass over a head's tokens and no attention recomputation: h2o
// (attnSum / attnCount), kvcompress (attnSqSum), knorm (−‖k‖ of the dequantized key), streaming (position) and
// random (the reference's mulberry32 stream). POLICY picks one at compile time. One thread per (layer of the
// range, kv head, logical token) of one sequence slot; protection (sinks, recent window) is applied here too.

@group(0) @binding(0) var<uniform> params: ScoreStatsParams;
@group(0) @binding(1) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(2) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]
@group(0) @binding(3) var<storage, read> full_pool: array<u32>;
@group(0) @binding(4) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(5) var<storage, read> stat_a: array<f32>;        // h2o: attnSum; kvcompress: attnSqSum
@group(0) @binding(6) var<storage, read> stat_b: array<f32>;        // h2o: attnCount
@group(0) @binding(7) var<storage, read_write> scores: array<f32>;  // [row][max_tokens]

const POLICY_H2O: u32 = 0u;
const POLICY_KVCOMPRESS: u32 = 1u;
const POLICY_KNORM: u32 = 2u;
const POLICY_STREAMING: u32 = 3u;
const POLICY_RANDOM: u32 = 4u;

// The per-(layer, kv head) seed of src/compress/policies/random.ts, in u32 arithmetic (Math.imul and ^ are the
// same bit operations).
fn random_stream_seed(seed: u32, layer: u32, kv_head: u32) -> u32 {
  return ((seed ^ 0x9e3779b9u) * 0x85ebca6bu) ^ ((layer + 1u) * 0xc2b2ae35u) ^ (kv_head + 1u);
}

// Draw number `index` (0-based) of mulberry32(stream): its state only ever adds 0x6d2b79f5, so draw i is the
// output hash of stream + (i + 1)·0x6d2b79f5 and every token computes its own draw independently.
fn mulberry32_draw(stream: u32, index: u32) -> u32 {
  var t = stream + (index + 1u) * 0x6d2b79f5u;
  t = (t ^ (t >> 15u)) * (t | 1u);
  t = t ^ (t + (t ^ (t >> 7u)) * (t | 61u));
  return t ^ (t >> 14u);
}

// Math.fround(u / 2^32) exactly: round-to-nearest-even of u to 24 significant bits in integer arithmetic,
// because WGSL leaves the rounding of a u32 → f32 conversion to the implementation.
fn unit_interval(u: u32) -> f32 {
  if (u < 0x1000000u) {
    return ldexp(f32(u), -32);
  }
  let shift = 8u - countLeadingZeros(u);
  var mantissa = u >> shift;
  let rest = u & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (mantissa & 1u) == 1u)) {
    mantissa += 1u;
  }
  return ldexp(f32(mantissa), i32(shift) - 32);
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
  let pos = kv_position(entry, s);
  let stat = row * params.max_tokens + t;
  var raw = 0.0;
  if (POLICY == POLICY_H2O) {
    let count = stat_b[stat];
    raw = select(0.0, stat_a[stat] / count, count > 0.0);
  } else if (POLICY == POLICY_KVCOMPRESS) {
    raw = stat_a[stat];
  } else if (POLICY == POLICY_KNORM) {
    var norm2 = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) {
      let k = kv_value(entry, s, d, false);
      norm2 += k * k;
    }
    raw = -sqrt(norm2);
  } else if (POLICY == POLICY_STREAMING) {
    raw = f32(pos);
  } else {
    raw = unit_interval(mulberry32_draw(random_stream_seed(params.seed, layer, kv_head), t));
  }
  scores[stat] = protect_score(raw, pos, params.sinks, params.recent_start);
}
