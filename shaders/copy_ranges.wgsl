// Copies equal-length word ranges within ONE buffer (WebGPU forbids copyBufferToBuffer from a buffer to itself):
// copy-on-write of blocks, forks of per-token statistics. One workgroup per range; ranges must not overlap.

@group(0) @binding(0) var<uniform> params: CopyRangesParams;
@group(0) @binding(1) var<storage, read> ranges: array<vec2<u32>>;   // (source word, destination word)
@group(0) @binding(2) var<storage, read_write> data: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  if (index >= params.num_ranges) {
    return;
  }
  let range = ranges[index];
  for (var i = lid; i < params.words_per_range; i += WORKGROUP_SIZE) {
    data[range.y + i] = data[range.x + i];
  }
}
