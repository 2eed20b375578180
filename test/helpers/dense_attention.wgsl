// Test-only dense causal attention: one thread per (query, query head), two passes over the keys (max, then
// exp-sum and value mix) in registers. Key t of the dense cache sits at position t. No barriers, so it is cheap on
// SwiftShader; it is the yardstick for the model, not a production kernel.

@group(0) @binding(0) var<uniform> params: DenseAttentionParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;     // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> keys: array<f32>;        // [max_tokens][KV_HEADS][HEAD_DIM] of this layer
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;   // [n][N_HEADS][HEAD_DIM]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  if (i >= params.num_queries * N_HEADS) {
    return;
  }
  let qi = i / N_HEADS;
  let head = i % N_HEADS;
  let kv_head = head / (N_HEADS / KV_HEADS);
  let count = params.first_position + qi + 1u;
  let q_base = i * HEAD_DIM;
  let layer_base = params.layer * params.max_tokens * KV_HEADS * HEAD_DIM;
  var q: array<f32, HEAD_DIM>;
  for (var d = 0u; d < HEAD_DIM; d++) {
    q[d] = queries[q_base + d];
  }
  var m = -3.0e38;
  for (var t = 0u; t < count; t++) {
    let k_base = layer_base + (t * KV_HEADS + kv_head) * HEAD_DIM;
    var s = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) {
      s += q[d] * keys[k_base + d];
    }
    m = max(m, s * params.scale);
  }
  var total = 0.0;
  var acc: array<f32, HEAD_DIM>;
  for (var t = 0u; t < count; t++) {
    let k_base = layer_base + (t * KV_HEADS + kv_head) * HEAD_DIM;
    var s = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) {
      s += q[d] * keys[k_base + d];
    }
    let p = exp(s * params.scale - m);
    total += p;
    for (var d = 0u; d < HEAD_DIM; d++) {
      acc[d] += p * values[k_base + d];
    }
  }
  for (var d = 0u; d < HEAD_DIM; d++) {
    out[q_base + d] = acc[d] / total;
  }
}
