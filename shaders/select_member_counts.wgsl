// Per-member counts of a joint selection (shaders/select_threshold.wgsl, segmented): for every member m of a
// segment, member_counts[m] = {keys > T, keys == T} over ALL the member's tokens, T being the segment's threshold
// key (exclusions included: the host subtracts them, src/compress/budgets-gpu.ts). One workgroup per MEMBER, so a
// joint budget over many heads (one segment) spreads this full read over as many workgroups as heads, where the
// threshold kernel has one. member_counts is zeroed by the host; a member in no segment keeps zeros.

@group(0) @binding(0) var<uniform> params: MemberCountParams;
@group(0) @binding(1) var<storage, read> scores: array<u32>;      // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> segments: array<u32>;    // [seg][3] {first member, members, k}
@group(0) @binding(3) var<storage, read> members: array<u32>;     // [m][2] {row, length}
@group(0) @binding(4) var<storage, read> thresholds: array<u32>;  // [seg][2] {key, keepEqual}
@group(0) @binding(5) var<storage, read_write> member_counts: array<atomic<u32>>; // [m][2] {greater, equal}


@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let m = linear_workgroup_index(wid, nwg);
  if (m >= params.num_members) {
    return;
  }
  let base = members[m * 2u] * params.stride;
  let len = members[m * 2u + 1u];
  // Every segment holding the member (normally one; the threshold kernel counted once per segment too).
  for (var s = 0u; s < params.num_segments; s++) {
    let first = segments[s * 3u];
    if (m < first || m - first >= segments[s * 3u + 1u]) {
      continue;
    }
    let key = thresholds[s * 2u];
    var greater = 0u;
    var equal = 0u;
    for (var t = lid; t < len; t += WORKGROUP_SIZE) {
      let k2 = order_key(scores[base + t]);
      greater += select(0u, 1u, k2 > key);
      equal += select(0u, 1u, k2 == key);
    }
    // One atomic per thread, not per token.
    if (greater != 0u) {
      atomicAdd(&member_counts[m * 2u], greater);
    }
    if (equal != 0u) {
      atomicAdd(&member_counts[m * 2u + 1u], equal);
    }
  }
}
