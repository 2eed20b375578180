// CaM's merge (MergeMode 'cam' in src/compress/options.ts; reference src/compress/merge.ts): each evicted token t
// whose first kept slot after it is f adds share(t) · v_t to kept slots f .. f + span − 1, span = min(CAM_MERGE_SPAN,
// kept − f), share(t) = min(1, w_t · span / Σ target w) / span. One thread per kept slot s (all channels, so a
// token's share is computed once per slot): slot s receives exactly the evicted tokens with f in
// [s − CAM_MERGE_SPAN + 1, s], i.e. those between kept slot s − CAM_MERGE_SPAN and kept slot s, which it walks in
// order (the reference's order of sums). Workgroups over (head, chunk of WORKGROUP_SIZE slots). The merged values
// go to `merged` for compact_blocks.

@group(0) @binding(0) var<uniform> params: MergeCamParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> merged: array<f32>;  // [out_base + slot][HEAD_DIM]

fn token_entry(row: u32, t: u32) -> u32 {
  return block_table[row * params.max_blocks + t / BLOCK_SIZE];
}

fn weight(row: u32, t: u32) -> f32 {
  return max(mass[row * params.stride + t], 0.0) + MERGE_WEIGHT_FLOOR;
}

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
  let row = heads[4u * head];
  let kept = heads[4u * head + 2u];
  let out = heads[4u * head + 3u];
  let s = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (s >= kept) {
    return;
  }
  let base = row * params.stride;
  let end = kept_index[base + s];
  var v: array<f32, HEAD_DIM>;
  let end_entry = token_entry(row, end);
  for (var d = 0u; d < HEAD_DIM; d++) {
    v[d] = kv_value(end_entry, end % BLOCK_SIZE, d, true);
  }
  var f = 0u;
  var t = 0u;
  if (s + 1u > CAM_MERGE_SPAN) {
    f = s + 1u - CAM_MERGE_SPAN;
    t = kept_index[base + f - 1u] + 1u;
  }
  // f = the first kept slot ≥ t; the share of the tokens before kept slot f depends on f only.
  var share_scale = 0.0;
  var span = 0u;
  var scale_of = kept;
  for (; t < end; t++) {
    if (t == kept_index[base + f]) {
      f++;
      continue;
    }
    if (scale_of != f) {
      span = min(CAM_MERGE_SPAN, kept - f);
      var dest_mass = 0.0;
      for (var j = f; j < f + span; j++) {
        dest_mass += weight(row, kept_index[base + j]);
      }
      share_scale = f32(span) / dest_mass;
      scale_of = f;
    }
    let share = min(1.0, weight(row, t) * share_scale) / f32(span);
    // One block-table lookup per token, not per channel.
    let entry = token_entry(row, t);
    for (var d = 0u; d < HEAD_DIM; d++) {
      v[d] += share * kv_value(entry, t % BLOCK_SIZE, d, true);
    }
  }
  for (var d = 0u; d < HEAD_DIM; d++) {
    merged[(out + s) * HEAD_DIM + d] = v[d];
  }
}
