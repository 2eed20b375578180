// Token embedding: out[t][c] = table[tokens[t]][c]. One thread per output float, so consecutive threads read
// consecutive floats of one embedding row (coalesced) and any number of tokens folds into the dispatch.

@group(0) @binding(0) var<uniform> params: EmbeddingParams;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;     // [num_tokens]
@group(0) @binding(2) var<storage, read> table: array<f32>;      // [vocab][dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [num_tokens][dim]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= params.num_tokens * params.dim) {
    return;
  }
  let t = i / params.dim;
  let c = i % params.dim;
  out[i] = table[tokens[t] * params.dim + c];
}
