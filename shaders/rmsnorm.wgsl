// RMSNorm of `rows` rows of `dim` floats: out = weight ⊙ (x · 1/√(mean(x²) + EPS)), llama2.c's order of
// operations. One workgroup per row: threads sum strided squares, then a shared-memory tree reduction. `out` may
// not alias `x` (WebGPU forbids binding one buffer as both read and read_write storage).

@group(0) @binding(0) var<uniform> params: RmsNormParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][dim]
@group(0) @binding(2) var<storage, read> weight: array<f32>;     // [dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][dim]

var<workgroup> partial: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = linear_workgroup_index(wid, nwg);
  if (row >= params.rows) {
    return;
  }
  let base = row * params.dim;
  var ss = 0.0;
  for (var c = lid; c < params.dim; c += WORKGROUP_SIZE) {
    let v = x[base + c];
    ss += v * v;
  }
  partial[lid] = ss;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  let scale = 1.0 / sqrt(partial[0] / f32(params.dim) + EPS);
  for (var c = lid; c < params.dim; c += WORKGROUP_SIZE) {
    out[base + c] = weight[c] * (scale * x[base + c]);
  }
}
