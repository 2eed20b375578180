// Split-context paged attention, second pass: combines the partitions of shaders/flash_decode_partial.wgsl by
// log-sum-exp. One thread per (query, head, channel); each reads the partitions' (max, sum) pairs itself, which
// costs partitions × 8 bytes per channel from cache and needs no barrier. Writes the normalised output, and
// (max, sum) per (query, head) for shaders/flash_decode_stats.wgsl. A row that saw no key gets zeros.

@group(0) @binding(0) var<uniform> params: MergeParams;
@group(0) @binding(1) var<storage, read> partial_acc: array<f32>;       // [n][N_HEADS][partitions][HEAD_DIM]
@group(0) @binding(2) var<storage, read> partial_ml: array<vec2<f32>>;  // [n][N_HEADS][partitions]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;         // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> lse: array<vec2<f32>>;   // [n][N_HEADS]: (max, sum of exp)

const MASKED_LOGIT: f32 = -3.0e38f;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= params.num_queries * N_HEADS * HEAD_DIM) {
    return;
  }
  let row = i / HEAD_DIM;
  let d = i % HEAD_DIM;
  let partitions = params.partitions;
  var m = MASKED_LOGIT;
  for (var p = 0u; p < partitions; p++) {
    m = max(m, partial_ml[row * partitions + p].x);
  }
  var l = 0.0;
  var acc = 0.0;
  for (var p = 0u; p < partitions; p++) {
    let ml = partial_ml[row * partitions + p];
    if (ml.y == 0.0) {
      continue;
    }
    let w = exp(ml.x - m);
    l = fma(ml.y, w, l);
    acc = fma(partial_acc[(row * partitions + p) * HEAD_DIM + d], w, acc);
  }
  out[i] = select(0.0, acc / l, l > 0.0);
  if (d == 0u) {
    lse[row] = vec2<f32>(m, l);
  }
}
