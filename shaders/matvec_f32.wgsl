// out[r][out_offset + c] (+)= Σ_k x[r][k] · w[c][k] with f32 weights (row_words = in_dim): the f32 member of the
// matvec family, for one part of an f32 weight split by rows across buffers (the tiled matmul has no output
// offset). Same work split as shaders/matvec_f16_packed.wgsl: one thread per column and block of ROW_BLOCK rows.

@group(0) @binding(0) var<uniform> params: MatvecParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][in_dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [out_dim][row_words]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][out_stride]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  let blocks = (params.rows + ROW_BLOCK - 1u) / ROW_BLOCK;
  if (i >= params.out_dim * blocks) {
    return;
  }
  let c = i % params.out_dim;
  let r0 = (i / params.out_dim) * ROW_BLOCK;
  let nr = min(ROW_BLOCK, params.rows - r0);
  let w_base = c * params.row_words;
  var acc: array<f32, ROW_BLOCK>;
  for (var k = 0u; k < params.in_dim; k++) {
    let wv = w[w_base + k];
    for (var rr = 0u; rr < nr; rr++) {
      acc[rr] += x[(r0 + rr) * params.in_dim + k] * wv;
    }
  }
  for (var rr = 0u; rr < nr; rr++) {
    let o = (r0 + rr) * params.out_stride + params.out_offset + c;
    if (ACCUMULATE) {
      out[o] = out[o] + acc[rr];
    } else {
      out[o] = acc[rr];
    }
  }
}
