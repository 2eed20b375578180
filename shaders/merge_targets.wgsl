// Where each evicted token of a compacted head merges to under MergeMode 'nearest' (src/compress/options.ts;
// reference src/compress/merge.ts nearestKept): among the MERGE_CANDIDATES kept slots whose key hashes are nearest
// in Hamming distance to the token's (earliest first on equal distance), the one whose key has the largest cosine
// similarity with the token's key (the earliest on ties). Kept tokens get KEPT. Pass 2 of 3: one thread per token,
// workgroups over (head, chunk of WORKGROUP_SIZE tokens). The kept hashes (shaders/merge_kept_keys.wgsl) go through
// workgroup memory HASH_TILE at a time, so a pair costs an xor, a popcount and a compare instead of a HEAD_DIM-long
// dot; the exact re-rank reads MERGE_CANDIDATES normalized kept keys per token. shaders/merge_values.wgsl reads the
// targets.

@group(0) @binding(0) var<uniform> params: MergeTargetsParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> targets: array<u32>; // [row][stride]
@group(0) @binding(7) var<storage, read> merged: array<vec4<f32>>;  // normalized kept keys (keys_offset: a multiple of 4), kept hashes

const KEPT: u32 = 0xffffffffu;

var<workgroup> tile_hashes: array<u32, HASH_TILE>;

// First kept slot whose index is ≥ t (the kept count when none is).
fn lower_bound(base: u32, kept: u32, t: u32) -> u32 {
  var lo = 0u;
  var hi = kept;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (kept_index[base + mid] < t) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  let head = index / params.chunks;
  // No early return: every invocation reaches the barriers (one past the heads or tokens does no work).
  var row = 0u;
  var tokens = 0u;
  var kept = 0u;
  var out = 0u;
  if (head < params.num_heads) {
    row = heads[4u * head];
    tokens = heads[4u * head + 1u];
    kept = heads[4u * head + 2u];
    out = heads[4u * head + 3u];
  }
  let base = row * params.stride;
  let t = (index % params.chunks) * WORKGROUP_SIZE + lid;
  var evicted = false;
  if (t < tokens) {
    let first = lower_bound(base, kept, t);
    if (first < kept && kept_index[base + first] == t) {
      targets[base + t] = KEPT;
    } else {
      evicted = true;
    }
  }
  var key: array<vec4<f32>, HEAD_VECS>;
  var hash = 0u;
  if (evicted) {
    let entry = token_entry_of(row, t);
    for (var i = 0u; i < HEAD_VECS; i++) {
      key[i] = kv_quad(entry, t % BLOCK_SIZE, i, false);
    }
    hash = key_hash(&key);
  }
  // The MERGE_CANDIDATES (4: one vec4) nearest so far by (distance, slot), ascending, kept in vector registers and updated
  // without branches (SwiftShader runs both sides of a lane-divergent branch); distance 33 marks an empty place.
  var cand_dist = vec4<u32>(33u);
  var cand_slot = vec4<u32>(KEPT);
  for (var tile = 0u; tile < kept; tile += HASH_TILE) {
    let count = min(HASH_TILE, kept - tile);
    workgroupBarrier();
    for (var i = lid; i < count; i += WORKGROUP_SIZE) {
      let w = params.hash_offset + 2u * (out + tile + i);
      tile_hashes[i] = u32(merged[w / 4u][w % 4u]) | (u32(merged[(w + 1u) / 4u][(w + 1u) % 4u]) << 16u);
    }
    workgroupBarrier();
    for (var s = 0u; s < count; s++) {
      let dist = vec4<u32>(countOneBits(hash ^ tile_hashes[s]));
      // A new entry goes before every place it is strictly nearer than (so after equal ones: earlier slots first).
      let nearer = dist < cand_dist;
      let shift = vec4<bool>(false, nearer.xyz);
      cand_dist = select(cand_dist, select(dist, vec4<u32>(dist.x, cand_dist.xyz), shift), nearer);
      cand_slot = select(cand_slot, select(vec4<u32>(tile + s), vec4<u32>(tile + s, cand_slot.xyz), shift), nearer);
    }
  }
  if (!evicted) {
    return;
  }
  // Exact re-rank: for a fixed evicted key e, argmax_s e·k̂_s / |e| = argmax_s e·k̂_s (a zero key scores 0 either
  // side). The four candidates' dots go along together, so the token's key is read once. An empty place (fewer kept
  // slots than candidates) reads slot 0 and never wins: its score is set below any other.
  let valid = cand_slot < vec4<u32>(kept);
  let keys = params.keys_offset / 4u + (vec4<u32>(out) + select(vec4<u32>(0u), cand_slot, valid)) * HEAD_VECS;
  var score = vec4<f32>(0.0);
  for (var i = 0u; i < HEAD_VECS; i++) {
    let k = key[i];
    score += vec4<f32>(dot(k, merged[keys.x + i]), dot(k, merged[keys.y + i]), dot(k, merged[keys.z + i]), dot(k, merged[keys.w + i]));
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
  targets[base + t] = best;
}
