// The scans both row-reduction libraries of shaders/flash_decode_partial.wgsl end in (not a kernel itself; included
// before shaders/flash_decode_reduce_workgroup.wgsl or shaders/flash_decode_reduce_subgroup.wgsl): the values
// posted in `reduce_shared` (declared by the including kernel), reduced in the same order by every caller.
// Up to 16 threads every thread scans the posted values (one barrier); past that one thread scans and posts the
// result (two barriers), since 64 threads each scanning 64 values cost SwiftShader more than the extra barrier.

const SCAN_ALL: bool = WORKGROUP_SIZE <= 16u;

fn scan_max_rows() -> vec4<f32> {
  var m = reduce_shared[0];
  for (var i = 1u; i < WORKGROUP_SIZE; i++) {
    m = max(m, reduce_shared[i]);
  }
  return m;
}

fn scan_sum_rows() -> vec4<f32> {
  var s = reduce_shared[0];
  for (var i = 1u; i < WORKGROUP_SIZE; i++) {
    s += reduce_shared[i];
  }
  return s;
}
