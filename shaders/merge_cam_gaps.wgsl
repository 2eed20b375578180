// CaM's merge, pass 1 of 2 (MergeMode 'cam' in src/compress/options.ts; reference src/compress/merge.ts). The
// evicted tokens between kept slots f − 1 and f (the gap of slot f) all have f as their first kept slot after them,
// so they share span_f = min(CAM_MERGE_SPAN, kept − f) and the targets' mass; this pass sums each gap once:
// G_f = Σ_{t in gap f} share(t) · v_t, share(t) = min(1, w_t · span_f / Σ target w) / span_f, into the gap sums
// after the merged values (shaders/merge_cam.wgsl adds the sums of the CAM_MERGE_SPAN gaps that reach each slot).
// Each evicted value is read once, not once per slot it reaches. One thread per (gap, eight channels: quads q and
// q + QUAD_PAIRS, so a token's weight and block are read once for both), tokens in order; workgroups over (head,
// chunk of WORKGROUP_SIZE of its kept · QUAD_PAIRS (gap, quad pair) pairs).

@group(0) @binding(0) var<uniform> params: MergeCamParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> merged: array<vec4<f32>>; // gap sums at gaps_offset + [out_base + f][HEAD_DIM] (f32 index)

const QUAD_PAIRS: u32 = (HEAD_VECS + 1u) / 2u;

// Channels 4q .. of the gap sum row at f32 index `at` (only those below HEAD_DIM exist).
fn store_quad(at: u32, q: u32, x: vec4<f32>) {
  if (HEAD_DIM % 4u == 0u && params.gaps_offset % 4u == 0u) {
    merged[at / 4u + q] = x;
    return;
  }
  for (var c = 0u; c < 4u; c++) {
    let i = at + 4u * q + c;
    if (4u * q + c < HEAD_DIM) {
      merged[i / 4u][i % 4u] = x[c];
    }
  }
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
  let i = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (i >= kept * QUAD_PAIRS) {
    return;
  }
  let f = i / QUAD_PAIRS;
  let q = i % QUAD_PAIRS;
  let q1 = q + QUAD_PAIRS;
  let second = q1 < HEAD_VECS;
  let base = row * params.stride;
  let end = kept_index[base + f];
  var t = 0u;
  if (f > 0u) {
    t = kept_index[base + f - 1u] + 1u;
  }
  var g = vec4<f32>(0.0);
  var g1 = vec4<f32>(0.0);
  if (t < end) {
    let span = min(CAM_MERGE_SPAN, kept - f);
    var dest_mass = 0.0;
    for (var j = f; j < f + span; j++) {
      dest_mass += weight(row, kept_index[base + j]);
    }
    let share_scale = f32(span) / dest_mass;
    for (; t < end; t++) {
      let share = min(1.0, weight(row, t) * share_scale) / f32(span);
      let entry = token_entry_of(row, t);
      g += share * kv_quad(entry, t % BLOCK_SIZE, q, true);
      if (second) {
        g1 += share * kv_quad(entry, t % BLOCK_SIZE, q1, true);
      }
    }
  }
  let gaps = params.gaps_offset + (out + f) * HEAD_DIM;
  store_quad(gaps, q, g);
  if (second) {
    store_quad(gaps, q1, g1);
  }
}
