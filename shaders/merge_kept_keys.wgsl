// Nearest merge, pass 1 of 4 (MergeMode 'nearest' in src/compress/options.ts; reference src/compress/merge.ts):
// each kept key of each merged head, read once: divided by its norm (a zero key stays zero) as f32 vec4s
// (HEAD_VECS per key, zero-padded) into the merged buffer at keys_offset + (out_base + slot) · 4 · HEAD_VECS, and its
// SimHash (shaders/merge_common.wgsl) as two exact 16-bit halves at hash_offset + 2 · (out_base + slot) (f32 words:
// a u32 bit pattern stored as f32 could be a NaN, which a device need not keep). shaders/merge_targets.wgsl ranks
// the kept hashes for every evicted token and re-ranks the best few by these keys (not in a head that ranks its
// windows exactly: nothing is written for it). One thread per run of KEYS_RUN
// kept slots, looping over those an evicted token may rank; workgroups over (head, chunk of WORKGROUP_SIZE runs).

@group(0) @binding(0) var<uniform> params: MergeKeptKeysParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> merged: array<f32>;  // normalized keys at keys_offset, hashes at hash_offset
@group(0) @binding(7) var<storage, read> full_pool8: array<vec4<u32>>; // full_pool again: eight f16 channels a load

// Whether some evicted token has kept slot s in its window (shaders/merge_window.wgsl): a slot no token ranks needs
// no key or hash.
fn is_candidate(base: u32, tokens: u32, kept: u32, s: u32) -> bool {
  let w = window_tokens(base, tokens, kept, s);
  return w.y - w.x > w.z;
}

// Kept slot s's normalized key and hash.
fn write_key(row: u32, out: u32, s: u32) {
  let j = kept_index[row * params.stride + s];
  let entry = token_entry_of(row, j);
  // The key is read twice (its norm, then the scaled channels) rather than kept in a private array, which
  // SwiftShader keeps in memory: as many loads, and no stores.
  let slot = j % BLOCK_SIZE;
  var n = 0.0;
  for (var o = 0u; o < HEAD_OCTETS; o++) {
    let k = kv_octet(entry, slot, o, false);
    n += dot(k.lo, k.lo);
    n += dot(k.hi, k.hi);
  }
  var scale = 0.0;
  if (n > 0.0) {
    scale = inverseSqrt(n);
  }
  let base = params.keys_offset + (out + s) * 4u * HEAD_VECS;
  for (var o = 0u; o < HEAD_OCTETS; o++) {
    let k = kv_octet(entry, slot, o, false);
    let x = k.lo * scale;
    merged[base + 8u * o] = x.x;
    merged[base + 8u * o + 1u] = x.y;
    merged[base + 8u * o + 2u] = x.z;
    merged[base + 8u * o + 3u] = x.w;
    if (2u * o + 1u < HEAD_VECS) {
      let y = k.hi * scale;
      merged[base + 8u * o + 4u] = y.x;
      merged[base + 8u * o + 5u] = y.y;
      merged[base + 8u * o + 6u] = y.z;
      merged[base + 8u * o + 7u] = y.w;
    }
  }
  let bits = key_hash(entry, j % BLOCK_SIZE);
  merged[params.hash_offset + 2u * (out + s)] = f32(bits & 0xffffu);
  merged[params.hash_offset + 2u * (out + s) + 1u] = f32(bits >> 16u);
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
  let first = ((index % params.chunks) * WORKGROUP_SIZE + lid) * KEYS_RUN;
  if (first >= kept) {
    return;
  }
  // Such a head's targets are ranked from the pool's keys (shaders/merge_targets.wgsl exact_target); the same for
  // every lane of the workgroup, so its threads skip the loop below at no cost.
  if (ranks_window_exactly(tokens, kept)) {
    return;
  }
  let last = min(kept, first + KEYS_RUN);
  let base = row * params.stride;
  var s = first;
  // One trip per slot some evicted token may rank (plus one): the others' keys and hashes are never read, and a
  // compression that evicts a few tokens (the decode schedule's one block per head) pays for the slots near them
  // (SwiftShader runs every branch with lanes masked, so only a loop's trip count saves work).
  loop {
    while (s < last && !is_candidate(base, tokens, kept, s)) {
      s++;
    }
    if (s >= last) {
      break;
    }
    write_key(row, out, s);
    s++;
  }
}
