// out[r][o] (+)= Σ_i x[r][i] · w[o][i] without workgroup memory: one thread per output, consecutive threads on
// consecutive columns of one row (so the x row is a broadcast and stores are coalesced). No barriers at all: the
// variant for software adapters (SwiftShader runs barrier loops ~100× slower than straight-line code); real GPUs
// use shaders/matmul.wgsl. Same contract as the tiled kernel, ACCUMULATE included.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][in_dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [out_dim][in_dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][out_dim]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= params.rows * params.out_dim) {
    return;
  }
  let r = i / params.out_dim;
  let c = i % params.out_dim;
  let x_base = r * params.in_dim;
  let w_base = c * params.in_dim;
  var acc = 0.0;
  for (var k = 0u; k < params.in_dim; k++) {
    acc += x[x_base + k] * w[w_base + k];
  }
  if (ACCUMULATE) {
    out[i] = out[i] + acc;
  } else {
    out[i] = acc;
  }
}
