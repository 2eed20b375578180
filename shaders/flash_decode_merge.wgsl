// Split-context paged attention, second pass: combines the partitions of shaders/flash_decode_partial.wgsl by
// log-sum-exp. One thread per (query, head, channel); each reads the partitions' (max, sum) pairs itself, which
// costs partitions × 8 bytes per channel from cache and needs no barrier. Writes the normalised output, and
// (max, sum) per (query, head) for shaders/flash_decode_stats.wgsl. A row that saw no key gets zeros.

@group(0) @binding(0) var<uniform> params: MergeParams;
// The partial pass's scratch (layout in shaders/flash_decode_partial.wgsl): V mixes and (max, Σ) pairs read,
// the (max, Σ) of each (query, head) written after them.
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;         // [n][N_HEADS][HEAD_DIM]

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
  let ml_base = params.num_queries * N_HEADS * partitions * HEAD_DIM;
  var m = MASKED_LOGIT;
  for (var p = 0u; p < partitions; p++) {
    m = max(m, partials[ml_base + (row * partitions + p) * 2u]);
  }
  var l = 0.0;
  var acc = 0.0;
  for (var p = 0u; p < partitions; p++) {
    let at = ml_base + (row * partitions + p) * 2u;
    let ml = vec2<f32>(partials[at], partials[at + 1u]);
    if (ml.y == 0.0) {
      continue;
    }
    let w = exp(ml.x - m);
    l = fma(ml.y, w, l);
    acc = fma(partials[(row * partitions + p) * HEAD_DIM + d], w, acc);
  }
  out[i] = select(0.0, acc / l, l > 0.0);
  if (d == 0u) {
    let lse = ml_base + params.num_queries * N_HEADS * partitions * 2u + row * 2u;
    partials[lse] = m;
    partials[lse + 1u] = l;
  }
}
