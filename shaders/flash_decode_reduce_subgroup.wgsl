// Row reductions of shaders/flash_decode_partial.wgsl with subgroup operations (not a kernel itself; compiled
// with `enable subgroups;` where the device has the feature; shaders/flash_decode_reduce_workgroup.wgsl is the
// fallback with the same functions and contract). Each subgroup reduces in registers; when one subgroup spans
// the whole workgroup (NVIDIA's 32 or AMD's 64 lanes against as many threads) that is the answer and workgroup
// memory is not read. Otherwise one lane per subgroup posts its subgroup's result and the others the identity,
// which needs no assumption about how invocations map to subgroups, and the posts are scanned as the fallback
// scans them (shaders/flash_decode_reduce_scan.wgsl, included before). The barriers stay either way:
// subgroup_size is not uniform to WGSL's analysis.

fn workgroup_max_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  let s = subgroupMax(x);
  let whole = subgroupAdd(1u) == WORKGROUP_SIZE;
  reduce_shared[lid] = select(vec4<f32>(-3.0e38f), s, subgroupElect());
  workgroupBarrier();
  var m = s;
  if (!SCAN_ALL) {
    if (lid == 0u && !whole) {
      reduce_result = scan_max_rows();
    }
    workgroupBarrier();
    if (!whole) {
      m = reduce_result;
    }
  } else if (!whole) {
    m = scan_max_rows();
  }
  return m;
}

fn workgroup_sum_rows(x: vec4<f32>, lid: u32) -> vec4<f32> {
  let s = subgroupAdd(x);
  let whole = subgroupAdd(1u) == WORKGROUP_SIZE;
  reduce_shared[lid] = select(vec4<f32>(0.0), s, subgroupElect());
  workgroupBarrier();
  var total = s;
  if (!SCAN_ALL) {
    if (lid == 0u && !whole) {
      reduce_result = scan_sum_rows();
    }
    workgroupBarrier();
    if (!whole) {
      total = reduce_result;
    }
  } else if (!whole) {
    total = scan_sum_rows();
  }
  return total;
}
