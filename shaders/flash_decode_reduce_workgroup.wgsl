// Row reductions of shaders/flash_decode_partial.wgsl through workgroup memory (not a kernel itself; the variant
// for adapters without the `subgroups` feature, and the reference its subgroup twin is tested against).
// The including kernel declares `reduce_shared: array<vec4<f32>, WORKGROUP_SIZE>` and `reduce_result: vec4<f32>`.
// Call from uniform control flow, with a barrier between two calls (the next call overwrites both). The scans
// (SCAN_ALL, scan_max_rows, scan_sum_rows) come from shaders/flash_decode_reduce_scan.wgsl, included before.

// The component-wise maximum of `x` over the workgroup's invocations, for every invocation.
fn workgroup_max_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  reduce_shared[lid] = x;
  workgroupBarrier();
  if (!SCAN_ALL) {
    if (lid == 0u) {
      reduce_result = scan_max_rows();
    }
    workgroupBarrier();
    return reduce_result;
  }
  return scan_max_rows();
}

// The component-wise sum of `x` over the workgroup's invocations, for every invocation (same order everywhere).
fn workgroup_sum_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  reduce_shared[lid] = x;
  workgroupBarrier();
  if (!SCAN_ALL) {
    if (lid == 0u) {
      reduce_result = scan_sum_rows();
    }
    workgroupBarrier();
    return reduce_result;
  }
  return scan_sum_rows();
}
