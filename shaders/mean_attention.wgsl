// The merge weight of every token of each merged head under statistics policies: the mean attention it received
// per query, attn_sum / attn_count (0 before any query). Σp alone favours old tokens, which have seen more queries.
// One thread per token; workgroups over (head, chunk of WORKGROUP_SIZE tokens).

@group(0) @binding(0) var<uniform> params: MeanAttentionParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;        // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> attn_sum: array<f32>;     // [row][stride]
@group(0) @binding(3) var<storage, read> attn_count: array<f32>;   // [row][stride]
@group(0) @binding(4) var<storage, read_write> mean: array<f32>;   // [row][stride]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  let head = index / params.chunks;
  if (head >= params.num_heads) {
    return;
  }
  let t = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (t >= heads[4u * head + 1u]) {
    return;
  }
  let i = heads[4u * head] * params.stride + t;
  let count = attn_count[i];
  var m = 0.0;
  if (count > 0.0) {
    m = attn_sum[i] / count;
  }
  mean[i] = m;
}
