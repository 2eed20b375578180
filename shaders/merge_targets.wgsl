// Where each evicted token of a compacted head merges to under MergeMode 'nearest' (src/compress/options.ts;
// reference src/compress/merge.ts): the kept slot whose key has the largest cosine similarity with the token's
// key (the earliest on ties). Kept tokens get KEPT. Pass 2 of 3: one thread per token, workgroups over (head, chunk
// of WORKGROUP_SIZE tokens); the kept keys, normalized by shaders/merge_kept_keys.wgsl, go through workgroup memory
// MERGE_TILE at a time (every thread loads a share of each tile), so each is read once per workgroup, not once per
// token. shaders/merge_values.wgsl reads the targets.

@group(0) @binding(0) var<uniform> params: MergeTargetsParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> targets: array<u32>; // [row][stride]
@group(0) @binding(7) var<storage, read> merged: array<f32>;        // normalized kept keys at keys_offset

const KEPT: u32 = 0xffffffffu;

// Keys as vec4s (HEAD_VECS = ⌈HEAD_DIM / 4⌉, zero-padded): a quarter of the loop iterations and workgroup loads of
// scalar channels (on SwiftShader, where this pass costs most, each is a lane-wide gather). The tile holds the kept
// keys already divided by their norms (a zero key stays zero), so a pair costs one dot: for a fixed evicted key e,
// argmax_s e·k̂_s / |e| = argmax_s e·k̂_s, and the reference's 0 for a zero key (either side) is what the dot gives.
var<workgroup> tile_keys: array<vec4<f32>, MERGE_TILE * HEAD_VECS>;

fn key_vec(entry: u32, t: u32, i: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * i + c;
    if (d < HEAD_DIM) {
      v[c] = kv_value(entry, t % BLOCK_SIZE, d, false);
    }
  }
  return v;
}

fn token_entry(row: u32, t: u32) -> u32 {
  return block_table[row * params.max_blocks + t / BLOCK_SIZE];
}

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
  if (evicted) {
    let entry = token_entry(row, t);
    for (var i = 0u; i < HEAD_VECS; i++) {
      key[i] = key_vec(entry, t, i);
    }
  }
  var best = 0u;
  var best_score = -3.0e38f;
  for (var tile = 0u; tile < kept; tile += MERGE_TILE) {
    workgroupBarrier();
    // The whole workgroup loads the tile, one vec4 per thread at a time (past the kept keys: zeros, never compared).
    let keys = params.keys_offset + (out + tile) * 4u * HEAD_VECS;
    for (var i = lid; i < MERGE_TILE * HEAD_VECS; i += WORKGROUP_SIZE) {
      var x = vec4<f32>(0.0);
      if (tile + i / HEAD_VECS < kept) {
        let w = keys + 4u * i;
        x = vec4<f32>(merged[w], merged[w + 1u], merged[w + 2u], merged[w + 3u]);
      }
      tile_keys[i] = x;
    }
    workgroupBarrier();
    if (evicted) {
      let count = min(MERGE_TILE, kept - tile);
      for (var s = 0u; s < count; s++) {
        var score = 0.0;
        for (var i = 0u; i < HEAD_VECS; i++) {
          score += dot(key[i], tile_keys[s * HEAD_VECS + i]);
        }
        if (score > best_score) {
          best_score = score;
          best = tile + s;
        }
      }
    }
  }
  if (evicted) {
    targets[base + t] = best;
  }
}
