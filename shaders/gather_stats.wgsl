// After compaction a head's token j is its old token kept[row][j]: carries a per-token statistic along,
//   out[row][j] = stats[row][kept[row][j]] for j < kept_counts[row], 0 beyond.
// One thread per output element; copied as raw bits so the statistic is moved, never re-rounded. `out` is a
// separate buffer because a row gathers from itself (kept[j] ≥ j would be overwritten in place).

@group(0) @binding(0) var<uniform> params: GatherStatsParams;
@group(0) @binding(1) var<storage, read> stats: array<u32>;        // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> kept: array<u32>;         // [row][stride]
@group(0) @binding(3) var<storage, read> kept_counts: array<u32>;  // [row]
@group(0) @binding(4) var<storage, read_write> out: array<u32>;    // f32 bits [i][stride], i = mapped index

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (index >= params.num_rows * params.stride) {
    return;
  }
  let i = index / params.stride;
  let row = params.row_base + (i / params.group_rows) * params.group_stride + i % params.group_rows;
  let j = index % params.stride;
  var value = 0u;
  if (j < kept_counts[row]) {
    value = stats[row * params.stride + kept[row * params.stride + j]];
  }
  out[index] = value;
}
