// CaM's merge (MergeMode 'cam' in src/compress/options.ts; reference src/compress/merge.ts) in one pass. The
// evicted tokens between kept slots f − 1 and f (the gap of slot f) all have f as their first kept slot after them,
// so they share span_f = min(CAM_MERGE_SPAN, kept − f) and the targets' mass: the gap sum is
// G_f = Σ_{t in gap f} share(t) · v_t, share(t) = min(1, w_t · span_f / Σ target w) / span_f, and kept slot s becomes
// v_s + G_{s−3} + G_{s−2} + G_{s−1} + G_s (CAM_MERGE_SPAN = 4: the gaps that reach it, ascending). One thread per
// (run of CAM_RUN consecutive slots, CAM_WIDTH octets of channels) walks its slots in order with the last four gap
// sums in named registers (a dynamically indexed private array lives in memory on SwiftShader), so each evicted value is
// read once, plus the three gaps before its run, and nothing goes through memory between the gaps and the slots
// (one pass instead of two; on SwiftShader every dispatched workgroup costs, even an idle one). The weight is the
// mass, or with MASS_MEAN the mean attention per query, mass / mass_count (0 before any query): computed here,
// not in a pass of its own. Workgroups over (head, chunk of WORKGROUP_SIZE (run, octet group) pairs); in a head that
// evicts few tokens (ranks_window_exactly), over (head, chunk of (evicted token, octet group) pairs): gap_slots.

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
@group(0) @binding(10) var<storage, read_write> merged_mask: array<atomic<u32>>; // bit out_base + slot: row written

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

// CAM_WIDTH (1, 2 or 4) consecutive octets of a token's channels, the ones one thread handles: a token's weight,
// block-table entry and share are computed once per CAM_WIDTH octets, not once per octet. Named fields, not an
// array (a dynamically indexed private array lives in memory on SwiftShader); the unused ones stay zero.
struct Wide {
  a: Octet,
  b: Octet,
  c: Octet,
  d: Octet,
}

// Thread groups of CAM_WIDTH octets per head row.
const CAM_GROUPS: u32 = (HEAD_OCTETS + CAM_WIDTH - 1u) / CAM_WIDTH;

fn octet_add(x: Octet, y: Octet) -> Octet {
  return Octet(x.lo + y.lo, x.hi + y.hi);
}

fn octet_fma(x: Octet, share: f32, y: Octet) -> Octet {
  return Octet(x.lo + share * y.lo, x.hi + share * y.hi);
}

fn wide_add(x: Wide, y: Wide) -> Wide {
  return Wide(octet_add(x.a, y.a), octet_add(x.b, y.b), octet_add(x.c, y.c), octet_add(x.d, y.d));
}

fn zero_wide() -> Wide {
  let z = Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  return Wide(z, z, z, z);
}

// Octets o0 .. o0 + CAM_WIDTH − 1 of a token's value (those past HEAD_OCTETS stay zero).
fn wide_value(entry: u32, slot: u32, o0: u32) -> Wide {
  var w = zero_wide();
  w.a = kv_octet(entry, slot, o0, true);
  if (CAM_WIDTH > 1u && o0 + 1u < HEAD_OCTETS) {
    w.b = kv_octet(entry, slot, o0 + 1u, true);
  }
  if (CAM_WIDTH > 2u && o0 + 2u < HEAD_OCTETS) {
    w.c = kv_octet(entry, slot, o0 + 2u, true);
  }
  if (CAM_WIDTH > 3u && o0 + 3u < HEAD_OCTETS) {
    w.d = kv_octet(entry, slot, o0 + 3u, true);
  }
  return w;
}

fn store_wide(row: u32, o0: u32, x: Wide) {
  store_octet(row, o0, x.a);
  if (CAM_WIDTH > 1u && o0 + 1u < HEAD_OCTETS) {
    store_octet(row, o0 + 1u, x.b);
  }
  if (CAM_WIDTH > 2u && o0 + 2u < HEAD_OCTETS) {
    store_octet(row, o0 + 2u, x.c);
  }
  if (CAM_WIDTH > 3u && o0 + 3u < HEAD_OCTETS) {
    store_octet(row, o0 + 3u, x.d);
  }
}

// Whether any evicted token merges into kept slot s: gaps s − 3 .. s hold the tokens between kept slots s − 4 and
// s (from token 0 for s < 4) but for the kept ones among them.
fn merges_into(base: u32, s: u32) -> bool {
  var before = s;
  if (s >= 4u) {
    before = kept_index[base + s - 4u] + 4u;
  }
  return kept_index[base + s] > before;
}

// G_f for the thread's octets (zero for an empty gap or f past the slots).
fn gap_sum(row: u32, kept: u32, f: u32, o0: u32) -> Wide {
  var g = zero_wide();
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
    let v = wide_value(token_entry_of(row, t), t % BLOCK_SIZE, o0);
    g.a = octet_fma(g.a, share, v.a);
    if (CAM_WIDTH > 1u) {
      g.b = octet_fma(g.b, share, v.b);
    }
    if (CAM_WIDTH > 2u) {
      g.c = octet_fma(g.c, share, v.c);
      g.d = octet_fma(g.d, share, v.d);
    }
  }
  return g;
}

// G_{s−3}, G_{s−2}, G_{s−1} for the thread's octets, the rolling sums a slot s starts from (named fields, not an
// array: SwiftShader keeps a dynamically indexed private array in memory).
struct Gaps {
  g0: Wide,
  g1: Wide,
  g2: Wide,
}

// The gaps before slot s (those before slot 0 are zero: adding +0 leaves a sum as it is).
fn gaps_before(row: u32, kept: u32, s: u32, o0: u32) -> Gaps {
  var g = Gaps(zero_wide(), zero_wide(), zero_wide());
  if (s >= 3u) {
    g.g0 = gap_sum(row, kept, s - 3u, o0);
  }
  if (s >= 2u) {
    g.g1 = gap_sum(row, kept, s - 2u, o0);
  }
  if (s >= 1u) {
    g.g2 = gap_sum(row, kept, s - 1u, o0);
  }
  return g;
}

// Writes kept slot s's merged row, v_s + G_{s−3} + G_{s−2} + G_{s−1} + G_s in that order, and its mask bit; returns
// the gaps before slot s + 1.
fn write_slot(row: u32, kept: u32, out: u32, s: u32, o0: u32, g: Gaps) -> Gaps {
  let g3 = gap_sum(row, kept, s, o0);
  let j = kept_index[row * params.stride + s];
  let v = wide_value(token_entry_of(row, j), j % BLOCK_SIZE, o0);
  store_wide(out + s, o0, wide_add(wide_add(wide_add(wide_add(v, g.g0), g.g1), g.g2), g3));
  if (o0 == 0u) {
    atomicOr(&merged_mask[(out + s) / 32u], 1u << ((out + s) % 32u));
  }
  return Gaps(g.g1, g.g2, g3);
}

// A head that evicts few tokens (ranks_window_exactly, shaders/merge_window.wgsl): thread i is (evicted token e,
// octet group); the first evicted token of each gap f writes the merged rows of the slots that gap reaches,
// f .. f + CAM_MERGE_SPAN − 1, with the rolling gap sums of the run loop (started three gaps before f). Two gaps
// that reach one slot both write it, the same sum in the same order: the same bits. Threads walking runs of slots
// would mostly find nothing to merge.
fn gap_slots(row: u32, tokens: u32, kept: u32, out: u32, i: u32) {
  let e = i / CAM_GROUPS;
  if (e >= tokens - kept) {
    return;
  }
  let base = row * params.stride;
  let f = next_after_evicted(base, kept, e);
  var gap_start = 0u;
  if (f > 0u) {
    gap_start = kept_index[base + f - 1u] + 1u;
  }
  if (e + f != gap_start || f >= kept) {
    return;
  }
  let o0 = (i % CAM_GROUPS) * CAM_WIDTH;
  var g = gaps_before(row, kept, f, o0);
  for (var s = f; s < min(kept, f + CAM_MERGE_SPAN); s++) {
    g = write_slot(row, kept, out, s, o0, g);
  }
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
  let tokens = heads[4u * head + 1u];
  let kept = heads[4u * head + 2u];
  let out = heads[4u * head + 3u];
  let i = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (ranks_window_exactly(tokens, kept)) {
    gap_slots(row, tokens, kept, out, i);
    return;
  }
  let first = (i / CAM_GROUPS) * CAM_RUN;
  if (first >= kept) {
    return;
  }
  let o0 = (i % CAM_GROUPS) * CAM_WIDTH;
  let last = min(kept, first + CAM_RUN);
  var g = gaps_before(row, kept, first, o0);
  let base = row * params.stride;
  var s = first;
  // The loop runs once per slot that some evicted token merges into (plus once), not once per slot: SwiftShader
  // runs every branch with lanes masked, so only a loop's trip count saves work. A compression that evicts a few
  // tokens (the decode schedule's one block per head) then costs what those tokens cost, not what the kept do.
  loop {
    // Slots that no gap reaches keep their own value (their mask bit stays 0: compact_blocks reads the pool). After
    // one, every gap before the next slot is empty, so the rolling sums restart at zero.
    var skipped = false;
    while (s < last && !merges_into(base, s)) {
      s++;
      skipped = true;
    }
    if (s >= last) {
      break;
    }
    if (skipped) {
      let z = zero_wide();
      g = Gaps(z, z, z);
    }
    g = write_slot(row, kept, out, s, o0, g);
    s++;
  }
}
