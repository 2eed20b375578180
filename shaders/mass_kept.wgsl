// Attention mass kept: per row, the total of `mass` over the row's tokens and over its kept tokens. One
// workgroup per row; the host reads back two floats per row (never the per-token values).

@group(0) @binding(0) var<uniform> params: MassKeptParams;
@group(0) @binding(1) var<storage, read> mass: array<f32>;          // [row][max_tokens]
@group(0) @binding(2) var<storage, read> lengths: array<u32>;       // [row] tokens before compression
@group(0) @binding(3) var<storage, read> kept_index: array<u32>;    // [row][max_tokens]
@group(0) @binding(4) var<storage, read> kept_count: array<u32>;    // [row]
@group(0) @binding(5) var<storage, read_write> sums: array<f32>;    // [out_base + row - first_row][2]: total, kept

var<workgroup> partial: array<vec2<f32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  if (index >= params.num_rows) {
    return;
  }
  let row = params.first_row + index;
  let base = row * params.max_tokens;
  var total = 0.0;
  for (var t = lid; t < lengths[row]; t += WORKGROUP_SIZE) {
    total += mass[base + t];
  }
  var kept = 0.0;
  for (var j = lid; j < kept_count[row]; j += WORKGROUP_SIZE) {
    kept += mass[base + kept_index[base + j]];
  }
  partial[lid] = vec2<f32>(total, kept);
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      partial[lid] += partial[lid + stride];
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    sums[2u * (params.out_base + index)] = partial[0].x;
    sums[2u * (params.out_base + index) + 1u] = partial[0].y;
  }
}
