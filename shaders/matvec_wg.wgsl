// out[r][out_offset + c] (+)= Σ_k x[r][k] · w[c][k], the variant for real GPUs: one workgroup per output column and
// block of ROW_BLOCK rows. Its WORKGROUP_SIZE threads stride over the row's weight pairs together, so consecutive
// threads read consecutive words (coalesced), each weight is read once per block of rows, and the partial sums are
// reduced in workgroup memory (a tree, log2(WORKGROUP_SIZE) barriers). The weight format comes from a library
// (shaders/matvec_load_*.wgsl: binding 2, weight_pair and weight_last). f32 accumulation.

@group(0) @binding(0) var<uniform> params: MatvecParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][in_dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][out_stride]

var<workgroup> partial: array<f32, WORKGROUP_SIZE * ROW_BLOCK>;  // [thread][row]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  let blocks = (params.rows + ROW_BLOCK - 1u) / ROW_BLOCK;
  // Uniform across the workgroup, so every thread returns or none does (the barriers below stay uniform).
  if (group >= params.out_dim * blocks) {
    return;
  }
  let c = group % params.out_dim;
  let r0 = (group / params.out_dim) * ROW_BLOCK;
  let nr = min(ROW_BLOCK, params.rows - r0);
  let base = c * params.row_words;
  let pairs = params.in_dim / 2u;
  var acc: array<f32, ROW_BLOCK>;
  for (var j = lid; j < pairs; j += WORKGROUP_SIZE) {
    let wv = weight_pair(base, j);
    for (var rr = 0u; rr < nr; rr++) {
      let xi = (r0 + rr) * params.in_dim + 2u * j;
      acc[rr] += x[xi] * wv.x + x[xi + 1u] * wv.y;
    }
  }
  if (params.in_dim % 2u == 1u && lid == 0u) {
    let wl = weight_last(base, pairs);
    for (var rr = 0u; rr < nr; rr++) {
      acc[rr] += x[(r0 + rr) * params.in_dim + params.in_dim - 1u] * wl;
    }
  }
  for (var rr = 0u; rr < ROW_BLOCK; rr++) {
    partial[lid * ROW_BLOCK + rr] = acc[rr];
  }
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      for (var rr = 0u; rr < ROW_BLOCK; rr++) {
        partial[lid * ROW_BLOCK + rr] += partial[(lid + stride) * ROW_BLOCK + rr];
      }
    }
    workgroupBarrier();
  }
  if (lid < nr) {
    let o = (r0 + lid) * params.out_stride + params.out_offset + c;
    if (ACCUMULATE) {
      out[o] = out[o] + partial[lid];
    } else {
      out[o] = partial[lid];
    }
  }
}
