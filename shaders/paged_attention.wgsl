// Paged attention: one workgroup per (query, query head). Each query belongs to a sequence slot and has a
// position; it sees the cached tokens of its KV head whose original position is ≤ its own (causal by position,
// so decode and a prefill chunk are the same kernel). Walks the head's block list, dequantizes on the fly.
// Three phases: logits and max, exp and sum, then the value mix with channels spread over lanes and tokens over
// parts. The normalised probabilities stay in `probs` for scoring (the weights fused kernels hide).

@group(0) @binding(0) var<uniform> params: AttentionParams;
@group(0) @binding(1) var<storage, read> queries: array<f32>;       // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(2) var<storage, read> query_slot: array<u32>;    // [n] sequence slot
@group(0) @binding(3) var<storage, read> query_pos: array<u32>;     // [n] position (sees keys with pos ≤ it)
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [layers][slots][kv_heads][max_blocks]
@group(0) @binding(5) var<storage, read> context_lens: array<u32>;  // [layers][slots][kv_heads]
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;     // [n][N_HEADS][HEAD_DIM]
@group(0) @binding(9) var<storage, read_write> probs: array<f32>;   // [n][N_HEADS][probs_stride]

const LANES: u32 = min(HEAD_DIM, WORKGROUP_SIZE);
const PARTS: u32 = WORKGROUP_SIZE / LANES;
const CHANNELS_PER_LANE: u32 = (HEAD_DIM + LANES - 1u) / LANES;

var<workgroup> q_shared: array<f32, HEAD_DIM>;
var<workgroup> reduce_shared: array<f32, WORKGROUP_SIZE>;
var<workgroup> mix_shared: array<f32, PARTS * HEAD_DIM>;

fn reduce_max(lid: u32, value: f32) -> f32 {
  reduce_shared[lid] = value;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      reduce_shared[lid] = max(reduce_shared[lid], reduce_shared[lid + stride]);
    }
    workgroupBarrier();
  }
  let result = reduce_shared[0];
  workgroupBarrier();
  return result;
}

fn reduce_sum(lid: u32, value: f32) -> f32 {
  reduce_shared[lid] = value;
  workgroupBarrier();
  for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      reduce_shared[lid] += reduce_shared[lid + stride];
    }
    workgroupBarrier();
  }
  let result = reduce_shared[0];
  workgroupBarrier();
  return result;
}

// q · k of token `slot` of a block, reading each stored word once: an f16 word holds two channels, a quantized
// code word 32 / QUANT_BITS of them (the per-value accessor would re-read the word for every channel).
fn key_dot(entry: u32, slot: u32) -> f32 {
  var dot = 0.0;
  if (HAS_QUANT && kv_is_quant(entry) && (HEAD_DIM * QUANT_BITS) % 32u != 0u) {
    // A token's codes do not fill whole words (tiny heads): decode value by value.
    for (var d = 0u; d < HEAD_DIM; d++) {
      dot += q_shared[d] * kv_value(entry, slot, d, false);
    }
    return dot;
  }
  if (HAS_QUANT && kv_is_quant(entry)) {
    let base = kv_block(entry) * QUANT_WORDS_PER_BLOCK;
    let per_word = 32u / QUANT_BITS;
    let mask = (1u << QUANT_BITS) - 1u;
    let first_word = slot * HEAD_DIM * QUANT_BITS / 32u;
    let params = base + QUANT_KP_OFFSET + (slot / QUANT_GROUP) * HEAD_DIM;
    for (var w = 0u; w < HEAD_DIM / per_word; w++) {
      let word = quant_pool[base + first_word + w];
      for (var i = 0u; i < per_word; i++) {
        let d = w * per_word + i;
        let scale_zero = unpack2x16float(quant_pool[params + d]);
        let code = (word >> (i * QUANT_BITS)) & mask;
        dot += q_shared[d] * (f32(code) * scale_zero.x + scale_zero.y);
      }
    }
    return dot;
  }
  let block = kv_block(entry);
  if (FULL_F16) {
    let base = block * FULL_WORDS_PER_BLOCK + slot * HEAD_DIM / 2u;
    for (var w = 0u; w < HEAD_DIM / 2u; w++) {
      let pair = unpack2x16float(full_pool[base + w]);
      dot += q_shared[2u * w] * pair.x;
      dot += q_shared[2u * w + 1u] * pair.y;
    }
    return dot;
  }
  let base = block * FULL_WORDS_PER_BLOCK + slot * HEAD_DIM;
  for (var d = 0u; d < HEAD_DIM; d++) {
    dot += q_shared[d] * bitcast<f32>(full_pool[base + d]);
  }
  return dot;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  if (group >= params.num_queries * N_HEADS) {
    return;
  }
  let qi = group / N_HEADS;
  let head = group % N_HEADS;
  let kv_head = head / (N_HEADS / KV_HEADS);
  let slot = query_slot[qi];
  let qpos = query_pos[qi];
  let row = (params.layer * params.seq_slots + slot) * KV_HEADS + kv_head;
  let len = context_lens[row];
  let table_base = row * params.max_blocks;
  let q_base = (qi * N_HEADS + head) * HEAD_DIM;
  let p_base = (qi * N_HEADS + head) * params.probs_stride;

  for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
    q_shared[d] = queries[q_base + d] * params.scale;
  }
  workgroupBarrier();

  var local_max = MASKED_LOGIT;
  for (var t = lid; t < len; t += WORKGROUP_SIZE) {
    let entry = block_table[table_base + t / BLOCK_SIZE];
    let s = t % BLOCK_SIZE;
    var logit = MASKED_LOGIT;
    if (kv_position(entry, s) <= qpos) {
      logit = key_dot(entry, s);
    }
    probs[p_base + t] = logit;
    local_max = max(local_max, logit);
  }
  let row_max = reduce_max(lid, local_max);

  var local_sum = 0.0;
  for (var t = lid; t < len; t += WORKGROUP_SIZE) {
    let logit = probs[p_base + t];
    var p = 0.0;
    if (logit > MASKED_LOGIT) {
      p = exp(logit - row_max);
    }
    probs[p_base + t] = p;
    local_sum += p;
  }
  let total = reduce_sum(lid, local_sum);
  let inv_total = select(0.0, 1.0 / total, total > 0.0);

  // Each thread normalises the probabilities it wrote itself, so no barrier is needed before the mix reads them
  // back... except that the mix reads other threads' tokens: the barrier below covers that.
  for (var t = lid; t < len; t += WORKGROUP_SIZE) {
    probs[p_base + t] = probs[p_base + t] * inv_total;
  }
  storageBarrier();
  workgroupBarrier();

  let lane = lid % LANES;
  let part = lid / LANES;
  var acc: array<f32, CHANNELS_PER_LANE>;
  if (part < PARTS) {
    for (var t = part; t < len; t += PARTS) {
      let p = probs[p_base + t];
      if (p == 0.0) {
        continue;
      }
      let entry = block_table[table_base + t / BLOCK_SIZE];
      let s = t % BLOCK_SIZE;
      for (var c = 0u; c < CHANNELS_PER_LANE; c++) {
        let d = lane + c * LANES;
        if (d < HEAD_DIM) {
          acc[c] += p * kv_value(entry, s, d, true);
        }
      }
    }
    for (var c = 0u; c < CHANNELS_PER_LANE; c++) {
      let d = lane + c * LANES;
      if (d < HEAD_DIM) {
        mix_shared[part * HEAD_DIM + d] = acc[c];
      }
    }
  }
  workgroupBarrier();
  for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
    var sum = 0.0;
    for (var p = 0u; p < PARTS; p++) {
      sum += mix_shared[p * HEAD_DIM + d];
    }
    out[q_base + d] = sum;
  }
}
