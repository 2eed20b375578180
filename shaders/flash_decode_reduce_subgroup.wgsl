// Row reductions of shaders/flash_decode_partial.wgsl with subgroup operations (not a kernel itself; compiled
// with `enable subgroups;` where the device has the feature; shaders/flash_decode_reduce_workgroup.wgsl is the
// fallback with the same functions). Each subgroup reduces in registers; when one subgroup spans the whole
// workgroup (NVIDIA's 32 or AMD's 64 lanes against as many threads) that is the answer and workgroup memory is
// not read. Otherwise one lane per subgroup posts its subgroup's result and the others post the identity, which
// needs no assumption about how invocations map to subgroups. The barrier stays in both cases: subgroup_size is
// not uniform to WGSL's analysis. Same contract as the fallback: uniform control flow, a barrier between calls.

fn workgroup_max_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  let s = subgroupMax(x);
  let whole = subgroupAdd(1u) == WORKGROUP_SIZE;
  reduce_shared[lid] = select(vec4<f32>(-3.0e38f), s, subgroupElect());
  workgroupBarrier();
  var m = s;
  for (var i = 0u; !whole && i < WORKGROUP_SIZE; i++) {
    m = max(m, reduce_shared[i]);
  }
  return m;
}

fn workgroup_sum_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  let s = subgroupAdd(x);
  let whole = subgroupAdd(1u) == WORKGROUP_SIZE;
  reduce_shared[lid] = select(vec4<f32>(0.0), s, subgroupElect());
  workgroupBarrier();
  var total = vec4<f32>(0.0);
  if (whole) {
    total = s;
  }
  for (var i = 0u; !whole && i < WORKGROUP_SIZE; i++) {
    total += reduce_shared[i];
  }
  return total;
}
