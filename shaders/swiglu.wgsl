// SwiGLU gate: out[r][c] = silu(a) · b with a = gate_up[r][c], b = gate_up[r][width + c]. The w1 and w3 projections
// run as one matmul over concatenated weights, so each row holds the gate half then the up half.

@group(0) @binding(0) var<uniform> params: SwigluParams;
@group(0) @binding(1) var<storage, read> gate_up: array<f32>;    // [rows][2 · width]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [rows][width]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= params.rows * params.width) {
    return;
  }
  let r = i / params.width;
  let c = i % params.width;
  let a = gate_up[r * 2u * params.width + c];
  let b = gate_up[r * 2u * params.width + params.width + c];
  out[i] = a / (1.0 + exp(-a)) * b;
}
