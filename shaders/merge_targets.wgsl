// Where each evicted token of a compacted head merges to under MergeMode 'nearest' (src/compress/options.ts;
// reference src/compress/merge.ts nearestKept): among the MERGE_WINDOW kept slots around the token (centred on its
// first kept slot after it, moved inside the head's slots), the MERGE_CANDIDATES whose key hashes are nearest in
// Hamming distance to the token's (earliest first on equal distance), and among those the one whose key has the
// largest cosine similarity with the token's key (the earliest on ties); in a head that keeps at least
// MERGE_EXACT_KEPT_PER_EVICTED times what it evicts (ranks_window_exactly), the one of the whole window with the
// largest cosine, its keys read from the pool (pass 1 then writes nothing for it). The word written is that
// slot + 1: kept tokens have none, and keep the 0 the targets are zeroed to before the passes. Pass 2 of 4: one
// thread per evicted token, workgroups over (head, chunk of WORKGROUP_SIZE evicted tokens), so the lanes of a
// group all have a token (SwiftShader runs a group's lanes together, masked); a pair
// costs a load, an xor, a popcount and a compare, and a token MERGE_WINDOW pairs, so the pass is linear in tokens.
// The re-rank reads MERGE_CANDIDATES normalized kept keys per token (shaders/merge_kept_keys.wgsl).
// shaders/merge_links.wgsl reads the targets.

@group(0) @binding(0) var<uniform> params: MergeTargetsParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> targets: array<u32>; // [row][stride]
@group(0) @binding(7) var<storage, read> merged: array<vec4<f32>>;  // normalized kept keys (keys_offset: a multiple of 4), kept hashes
@group(0) @binding(8) var<storage, read> full_pool8: array<vec4<u32>>; // full_pool again: eight f16 channels a load

// An empty place among the candidates.
const NO_SLOT: u32 = 0xffffffffu;

// Puts (distance, slot) into one token's MERGE_CANDIDATES (4: one vec4) nearest so far by (distance, slot),
// ascending, without branches (SwiftShader runs both sides of a lane-divergent branch); distance 33 marks an empty
// place. A new entry goes before every place it is strictly nearer than (so after equal ones: earlier slots first).
fn insert(cand_dist: ptr<function, vec4<u32>>, cand_slot: ptr<function, vec4<u32>>, distance: u32, slot: u32) {
  let dist = vec4<u32>(distance);
  let cd = *cand_dist;
  let cs = *cand_slot;
  let nearer = dist < cd;
  let shift = vec4<bool>(false, nearer.xyz);
  *cand_dist = select(cd, select(dist, vec4<u32>(dist.x, cd.xyz), shift), nearer);
  *cand_slot = select(cs, select(vec4<u32>(slot), vec4<u32>(slot, cs.xyz), shift), nearer);
}

// The window's slot whose key has the largest cosine with token t's (the earliest on ties): for a fixed key e the
// argmax of e·k_s / |k_s|, each kept key's dot and norm taken in one pass over it.
fn exact_target(row: u32, base: u32, entry: u32, t: u32, start: u32, end: u32) -> u32 {
  var best = start;
  var best_score = -3.0e38f;
  for (var s = start; s < end; s++) {
    let j = kept_index[base + s];
    let kept_entry = token_entry_of(row, j);
    var along = 0.0;
    var norm = 0.0;
    for (var o = 0u; o < HEAD_OCTETS; o++) {
      let e = kv_octet(entry, t % BLOCK_SIZE, o, false);
      let k = kv_octet(kept_entry, j % BLOCK_SIZE, o, false);
      along += dot(e.lo, k.lo) + dot(e.hi, k.hi);
      norm += dot(k.lo, k.lo) + dot(k.hi, k.hi);
    }
    // A zero key scores 0, as in the hashed re-rank below.
    var score = 0.0;
    if (norm > 0.0) {
      score = along * inverseSqrt(norm);
    }
    if (score > best_score) {
      best_score = score;
      best = s;
    }
  }
  return best;
}

// The kept slot evicted token t merges into; `next` is its first kept slot after it.
fn target_of(row: u32, tokens: u32, kept: u32, out: u32, t: u32, next: u32) -> u32 {
  let entry = token_entry_of(row, t);
  // The window: MERGE_WINDOW slots centred on `next`, moved inside [0, kept).
  var start = 0u;
  if (kept > MERGE_WINDOW) {
    start = min(max(next, MERGE_WINDOW / 2u) - MERGE_WINDOW / 2u, kept - MERGE_WINDOW);
  }
  let end = min(kept, start + MERGE_WINDOW);
  // The same for every token of the head, so for every lane of a workgroup: only one side runs.
  if (ranks_window_exactly(tokens, kept)) {
    return exact_target(row, row * params.stride, entry, t, start, end);
  }
  let hash = key_hash(entry, t % BLOCK_SIZE);
  var cand_dist = vec4<u32>(33u);
  var cand_slot = vec4<u32>(NO_SLOT);
  for (var s = start; s < end; s++) {
    // Hashes sit at an even f32 index, so both halves are in one vec4: one load.
    let w = params.hash_offset + 2u * (out + s);
    let v = merged[w / 4u];
    let h = select(u32(v.x) | (u32(v.y) << 16u), u32(v.z) | (u32(v.w) << 16u), w % 4u != 0u);
    let dist = countOneBits(hash ^ h);
    // Past the first few slots a pair rarely enters the four nearest (a branch all lanes of a SIMD group agree on
    // costs nothing on SwiftShader).
    if (dist < cand_dist.w) {
      insert(&cand_dist, &cand_slot, dist, s);
    }
  }
  // Exact re-rank: for a fixed evicted key e, argmax_s e·k̂_s / |e| = argmax_s e·k̂_s (a zero key scores 0 either
  // side). The four candidates' dots go along together, so the token's key is read once more (after the hash). An
  // empty place (fewer slots in the window than candidates) reads slot 0 and never wins: its score is set below any
  // other.
  let valid = cand_slot < vec4<u32>(kept);
  let keys = params.keys_offset / 4u + (vec4<u32>(out) + select(vec4<u32>(0u), cand_slot, valid)) * HEAD_VECS;
  var score = vec4<f32>(0.0);
  for (var o = 0u; o < HEAD_OCTETS; o++) {
    let e = kv_octet(entry, t % BLOCK_SIZE, o, false);
    let i = 2u * o;
    score += vec4<f32>(dot(e.lo, merged[keys.x + i]), dot(e.lo, merged[keys.y + i]), dot(e.lo, merged[keys.z + i]), dot(e.lo, merged[keys.w + i]));
    if (i + 1u < HEAD_VECS) {
      let h = i + 1u;
      score += vec4<f32>(dot(e.hi, merged[keys.x + h]), dot(e.hi, merged[keys.y + h]), dot(e.hi, merged[keys.z + h]), dot(e.hi, merged[keys.w + h]));
    }
  }
  score = select(vec4<f32>(-3.0e38f), score, valid);
  // The best score, the earliest slot on ties (the candidates are in Hamming order, not slot order).
  var best = cand_slot.x;
  var best_score = score.x;
  for (var c = 1u; c < 4u; c++) {
    if (score[c] > best_score || (score[c] == best_score && cand_slot[c] < best)) {
      best_score = score[c];
      best = cand_slot[c];
    }
  }
  return best;
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
  let base = row * params.stride;
  let i = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (i >= tokens - kept) {
    return;
  }
  let next = next_after_evicted(base, kept, i);
  let t = i + next;
  targets[base + t] = target_of(row, tokens, kept, out, t, next) + 1u;
}
