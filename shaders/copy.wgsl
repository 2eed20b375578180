// Copies COUNT u32 words from src to dst. The bandwidth yardstick every benchmark divides by: each workgroup
// moves WORKGROUP_SIZE × WORDS_PER_THREAD consecutive words, coalesced (thread t takes words t, t + WG, ...).

@group(0) @binding(0) var<uniform> params: CopyParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  let base = group * WORKGROUP_SIZE * WORDS_PER_THREAD;
  for (var j = 0u; j < WORDS_PER_THREAD; j++) {
    let i = base + j * WORKGROUP_SIZE + lid;
    if (i < params.count) {
      dst[i] = src[i];
    }
  }
}
