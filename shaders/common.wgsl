// Helpers shared by every kernel (not a kernel itself). Prepended after the generated constants.

// Dispatches past maxComputeWorkgroupsPerDimension are folded into 2-D/3-D by the host; this recovers the
// linear workgroup index. Kernels return early when it is past their real count.
fn linear_workgroup_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x + wid.z * nwg.x * nwg.y;
}
