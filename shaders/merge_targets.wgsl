// Where each evicted token of a compacted head merges to under MergeMode 'nearest' (src/compress/options.ts;
// reference src/compress/merge.ts nearestKept): among the MERGE_CANDIDATES kept slots whose key hashes are nearest
// in Hamming distance to the token's (earliest first on equal distance), the one whose key has the largest cosine
// similarity with the token's key (the earliest on ties). Kept tokens get KEPT. Pass 2 of 3: one thread per four
// tokens (t, t + WORKGROUP_SIZE, t + 2 WORKGROUP_SIZE, t + 3 WORKGROUP_SIZE), workgroups over (head, chunk of
// TARGET_TOKENS = 4 · WORKGROUP_SIZE tokens). The kept hashes (shaders/merge_kept_keys.wgsl) go through workgroup
// memory HASH_TILE at a time, so a pair costs an xor, a popcount and a compare instead of a HEAD_DIM-long dot; on
// SwiftShader each workgroup-memory read costs a load per lane, so one read serves four tokens. The exact re-rank
// reads MERGE_CANDIDATES normalized kept keys per token. shaders/merge_values.wgsl reads the targets.

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
  let t = vec4<u32>((index % params.chunks) * 4u * WORKGROUP_SIZE + lid) + vec4<u32>(0u, 1u, 2u, 3u) * WORKGROUP_SIZE;
  var evicted = vec4<bool>(false);
  var hashes = vec4<u32>(0u);
  for (var k = 0u; k < 4u; k++) {
    if (t[k] < tokens) {
      let first = lower_bound(base, kept, t[k]);
      if (first < kept && kept_index[base + first] == t[k]) {
        targets[base + t[k]] = KEPT;
      } else {
        evicted[k] = true;
        hashes[k] = key_hash(token_entry_of(row, t[k]), t[k] % BLOCK_SIZE);
      }
    }
  }
  // Per token the MERGE_CANDIDATES (4: one vec4) nearest so far by (distance, slot), ascending, kept in vector
  // registers and updated without branches (SwiftShader runs both sides of a lane-divergent branch); distance 33
  // marks an empty place.
  var d0 = vec4<u32>(33u);
  var d1 = d0;
  var d2 = d0;
  var d3 = d0;
  var s0 = vec4<u32>(KEPT);
  var s1 = s0;
  var s2 = s0;
  var s3 = s0;
  for (var tile = 0u; tile < kept; tile += HASH_TILE) {
    let count = min(HASH_TILE, kept - tile);
    workgroupBarrier();
    for (var i = lid; i < count; i += WORKGROUP_SIZE) {
      let w = params.hash_offset + 2u * (out + tile + i);
      tile_hashes[i] = u32(merged[w / 4u][w % 4u]) | (u32(merged[(w + 1u) / 4u][(w + 1u) % 4u]) << 16u);
    }
    workgroupBarrier();
    for (var s = 0u; s < count; s++) {
      let slot = tile + s;
      let dists = countOneBits(hashes ^ vec4<u32>(tile_hashes[s]));
      // Four named pairs, not an array indexed in a loop: SwiftShader keeps a dynamically indexed private array in
      // memory (a load and a store per lane each access).
      // After the first few slots a pair rarely enters the four nearest: skip the insertion when none of the
      // four tokens' pairs does (a branch all lanes of a SIMD group agree on costs nothing on SwiftShader).
      if (any(dists < vec4<u32>(d0.w, d1.w, d2.w, d3.w))) {
        insert(&d0, &s0, dists.x, slot);
        insert(&d1, &s1, dists.y, slot);
        insert(&d2, &s2, dists.z, slot);
        insert(&d3, &s3, dists.w, slot);
      }
    }
  }
  let cand_slot = array<vec4<u32>, 4>(s0, s1, s2, s3);
  for (var k = 0u; k < 4u; k++) {
    if (!evicted[k]) {
      continue;
    }
    // Exact re-rank: for a fixed evicted key e, argmax_s e·k̂_s / |e| = argmax_s e·k̂_s (a zero key scores 0 either
    // side). The four candidates' dots go along together, so the token's key is read once more here (holding four
    // tokens' keys through the scan would not fit in registers). An empty place (fewer kept slots than candidates)
    // reads slot 0 and never wins: its score is set below any other.
    let slots = cand_slot[k];
    let valid = slots < vec4<u32>(kept);
    let keys = params.keys_offset / 4u + (vec4<u32>(out) + select(vec4<u32>(0u), slots, valid)) * HEAD_VECS;
    let entry = token_entry_of(row, t[k]);
    var score = vec4<f32>(0.0);
    for (var i = 0u; i < HEAD_VECS; i++) {
      let e = kv_quad(entry, t[k] % BLOCK_SIZE, i, false);
      score += vec4<f32>(dot(e, merged[keys.x + i]), dot(e, merged[keys.y + i]), dot(e, merged[keys.z + i]), dot(e, merged[keys.w + i]));
    }
    score = select(vec4<f32>(-3.0e38f), score, valid);
    // The best score, the earliest slot on ties (the candidates are in Hamming order, not slot order).
    var best = slots.x;
    var best_score = score.x;
    for (var c = 1u; c < 4u; c++) {
      if (score[c] > best_score || (score[c] == best_score && slots[c] < best)) {
        best_score = score[c];
        best = slots[c];
      }
    }
    targets[base + t[k]] = best;
  }
}
