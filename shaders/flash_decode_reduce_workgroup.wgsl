// Row reductions of shaders/flash_decode_partial.wgsl through workgroup memory (not a kernel itself; the variant
// for adapters without the `subgroups` feature, and the reference its subgroup twin is tested against).
// The including kernel declares `reduce_shared: array<vec4<f32>, WORKGROUP_SIZE>`. Each call holds one barrier:
// call from uniform control flow, and put another barrier between two calls (the next call overwrites the array).

// The component-wise maximum of `x` over the workgroup's invocations, for every invocation.
fn workgroup_max_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  reduce_shared[lid] = x;
  workgroupBarrier();
  var m = reduce_shared[0];
  for (var i = 1u; i < WORKGROUP_SIZE; i++) {
    m = max(m, reduce_shared[i]);
  }
  return m;
}

// The component-wise sum of `x` over the workgroup's invocations, for every invocation (same order everywhere).
fn workgroup_sum_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  reduce_shared[lid] = x;
  workgroupBarrier();
  var s = reduce_shared[0];
  for (var i = 1u; i < WORKGROUP_SIZE; i++) {
    s += reduce_shared[i];
  }
  return s;
}
