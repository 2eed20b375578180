// SnapKV / TOVA, pass 1: the softmax normaliser of each (layer of the range, window query, query head) over the
// visible cached tokens of its KV head, for one sequence slot. A window query sees tokens whose original
// position is ≤ its own. Online softmax per thread (one pass over the keys), then one tree reduction of
// (max, sum) pairs, so the workgroup loops on a barrier only log2(WORKGROUP_SIZE) times.
// Output: lse[layer][window row][head] = (max logit, 1 / Σ exp(logit − max)); 1/Σ = 0 when nothing is visible,
// which makes every probability of that row 0, as the reference's attention does.
// The w rows used are the newest: positions seq_len − w .. seq_len − 1, at ring index position mod window_cap.

@group(0) @binding(0) var<uniform> params: SnapKVParams;
@group(0) @binding(1) var<storage, read> window_q: array<f32>;      // [layers][slots][window_cap][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> window_pos: array<u32>;    // [layers][slots][window_cap]
@group(0) @binding(3) var<storage, read> block_table: array<u32>;
@group(0) @binding(4) var<storage, read> context_lens: array<u32>;
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> lse: array<f32>;     // [layer_count][window][N_HEADS][2]

var<workgroup> q_shared: array<f32, HEAD_DIM>;
var<workgroup> max_shared: array<f32, WORKGROUP_SIZE>;
var<workgroup> sum_shared: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group_index = linear_workgroup_index(wid, nwg);
  if (group_index >= params.layer_count * params.window * N_HEADS) {
    return;
  }
  let l = group_index / (params.window * N_HEADS);
  let j = (group_index / N_HEADS) % params.window;
  let head = group_index % N_HEADS;
  let layer = params.layer + l;
  let kv_head = head / (N_HEADS / KV_HEADS);
  let base = layer * params.seq_slots + params.slot;
  let ring = (params.seq_len - params.window + j) % params.window_cap;
  let qpos = window_pos[base * params.window_cap + ring];
  let q_base = ((base * params.window_cap + ring) * N_HEADS + head) * HEAD_DIM;
  let row = base * KV_HEADS + kv_head;
  let len = context_lens[row];
  let table_base = row * params.max_blocks;

  for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
    q_shared[d] = window_q[q_base + d];
  }
  workgroupBarrier();

  var run_max = MASKED_LOGIT;
  var run_sum = 0.0;
  for (var t = lid; t < len; t += WORKGROUP_SIZE) {
    let entry = block_table[table_base + t / BLOCK_SIZE];
    let s = t % BLOCK_SIZE;
    if (kv_position(entry, s) > qpos) {
      continue;
    }
    // Same expression as snapkv_score.wgsl so both passes see the same logit.
    var dot = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) {
      dot += q_shared[d] * kv_value(entry, s, d, false);
    }
    let logit = dot * params.scale;
    if (logit > run_max) {
      run_sum = run_sum * exp(run_max - logit) + 1.0;
      run_max = logit;
    } else {
      run_sum += exp(logit - run_max);
    }
  }
  max_shared[lid] = run_max;
  sum_shared[lid] = run_sum;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      let m1 = max_shared[lid];
      let m2 = max_shared[lid + stride];
      let m = max(m1, m2);
      sum_shared[lid] = sum_shared[lid] * exp(m1 - m) + sum_shared[lid + stride] * exp(m2 - m);
      max_shared[lid] = m;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let total = sum_shared[0];
    let out = ((l * params.window + j) * N_HEADS + head) * 2u;
    lse[out] = max_shared[0];
    lse[out + 1u] = select(0.0, 1.0 / total, total > 0.0);
  }
}
