// A token's merge weight (not a kernel itself; included by shaders/merge_values.wgsl and merge_cam.wgsl after
// shaders/merge_common.wgsl). The including kernel binds `mass` and `mass_count` (f32 [row][stride]) and has
// `params.stride`: the mass, or with MASS_MEAN the mean attention per query, mass / mass_count (0 before any
// query), floored at MERGE_WEIGHT_FLOOR, as src/compress/merge.ts weighs a token.
fn weight(row: u32, t: u32) -> f32 {
  let i = row * params.stride + t;
  var m = mass[i];
  if (MASS_MEAN) {
    let count = mass_count[i];
    m = select(0.0, m / count, count > 0.0);
  }
  return max(m, 0.0) + MERGE_WEIGHT_FLOOR;
}
