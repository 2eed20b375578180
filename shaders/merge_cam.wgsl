// CaM's merge (MergeMode 'cam' in src/compress/options.ts; reference src/compress/merge.ts) in one pass. The
// evicted tokens between kept slots f − 1 and f (the gap of slot f) all have f as their first kept slot after them,
// so they share span_f = min(CAM_MERGE_SPAN, kept − f) and the targets' mass: the gap sum is
// G_f = Σ_{t in gap f} share(t) · v_t, share(t) = min(1, w_t · span_f / Σ target w) / span_f, and kept slot s becomes
// v_s + G_{s−3} + G_{s−2} + G_{s−1} + G_s (CAM_MERGE_SPAN = 4: the gaps that reach it, ascending). One thread per
// (run of CAM_RUN consecutive slots, eight channels) walks its slots in order with the last four gap sums in
// named registers (a dynamically indexed private array lives in memory on SwiftShader), so each evicted value is
// read once, plus the three gaps before its run, and nothing goes through memory between the gaps and the slots
// (one pass instead of two; on SwiftShader every dispatched workgroup costs, even an idle one). The weight is the
// mass, or with MASS_MEAN the mean attention per query, mass / mass_count (0 before any query): computed here,
// not in a pass of its own. Workgroups over (head, chunk of WORKGROUP_SIZE (run, octet) pairs).

@group(0) @binding(0) var<uniform> params: MergeCamParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass (sum) per token
@group(0) @binding(4) var<storage, read> mass_count: array<f32>;    // [row][stride] queries seen (MASS_MEAN only)
@group(0) @binding(5) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(6) var<storage, read> full_pool: array<u32>;
@group(0) @binding(7) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(8) var<storage, read> full_pool8: array<vec4<u32>>; // full_pool again: eight f16 channels a load
@group(0) @binding(9) var<storage, read_write> merged: array<vec4<f32>>; // [out_base + slot][HEAD_DIM] (f32 indices)

// Channels 8o .. 8o + 7 of slot row `row` of `merged` (only those below HEAD_DIM exist).
fn store_octet(row: u32, o: u32, x: Octet) {
  if (HEAD_DIM % 8u == 0u) {
    merged[row * HEAD_VECS + 2u * o] = x.lo;
    merged[row * HEAD_VECS + 2u * o + 1u] = x.hi;
    return;
  }
  for (var c = 0u; c < 8u; c++) {
    let d = 8u * o + c;
    let at = row * HEAD_DIM + d;
    if (d < HEAD_DIM) {
      merged[at / 4u][at % 4u] = select(x.hi[c % 4u], x.lo[c % 4u], c < 4u);
    }
  }
}

fn weight(row: u32, t: u32) -> f32 {
  let i = row * params.stride + t;
  var m = mass[i];
  if (MASS_MEAN) {
    let count = mass_count[i];
    m = select(0.0, m / count, count > 0.0);
  }
  return max(m, 0.0) + MERGE_WEIGHT_FLOOR;
}

// G_f for the thread's octet (zero for an empty gap or f past the slots).
fn gap_sum(row: u32, kept: u32, f: u32, o: u32) -> Octet {
  var g = Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  let base = row * params.stride;
  let end = kept_index[base + f];
  var t = 0u;
  if (f > 0u) {
    t = kept_index[base + f - 1u] + 1u;
  }
  if (t >= end) {
    return g;
  }
  let span = min(CAM_MERGE_SPAN, kept - f);
  var dest_mass = 0.0;
  for (var j = f; j < f + span; j++) {
    dest_mass += weight(row, kept_index[base + j]);
  }
  let share_scale = f32(span) / dest_mass;
  for (; t < end; t++) {
    let share = min(1.0, weight(row, t) * share_scale) / f32(span);
    let v = kv_octet(token_entry_of(row, t), t % BLOCK_SIZE, o, true);
    g.lo += share * v.lo;
    g.hi += share * v.hi;
  }
  return g;
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
  let first = (i / HEAD_OCTETS) * CAM_RUN;
  if (first >= kept) {
    return;
  }
  let o = i % HEAD_OCTETS;
  let last = min(kept, first + CAM_RUN);
  // g0 .. g3 = G_{s−3} .. G_s; the gaps before slot 0 are zero (adding +0 leaves a sum as it is).
  let zero = Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  var g0 = zero;
  var g1 = zero;
  var g2 = zero;
  if (first >= 3u) {
    g0 = gap_sum(row, kept, first - 3u, o);
  }
  if (first >= 2u) {
    g1 = gap_sum(row, kept, first - 2u, o);
  }
  if (first >= 1u) {
    g2 = gap_sum(row, kept, first - 1u, o);
  }
  for (var s = first; s < last; s++) {
    let g3 = gap_sum(row, kept, s, o);
    let j = kept_index[row * params.stride + s];
    let v = kv_octet(token_entry_of(row, j), j % BLOCK_SIZE, o, true);
    store_octet(out + s, o, Octet(v.lo + g0.lo + g1.lo + g2.lo + g3.lo, v.hi + g0.hi + g1.hi + g2.hi + g3.hi));
    g0 = g1;
    g1 = g2;
    g2 = g3;
  }
}
