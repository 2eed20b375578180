// Which tokens the nearest merge can send to a kept slot, and which heads evict few tokens (not a kernel itself;
// included by shaders/merge_targets.wgsl, merge_links.wgsl, merge_kept_keys.wgsl, merge_values.wgsl and
// merge_cam.wgsl). The including kernel binds `kept_index` (u32 [row][stride], ascending) and has MERGE_WINDOW and
// MERGE_EXACT_KEPT_PER_EVICTED.

// Whether the nearest merge ranks a head's windows by exact cosine, no hashes (ranksWindowExactly in
// src/kernels/compress/merge-values.ts): it keeps at least MERGE_EXACT_KEPT_PER_EVICTED times what it evicts.
// Such a head also has its lists built per evicted token (shaders/merge_links.wgsl).
fn ranks_window_exactly(tokens: u32, kept: u32) -> bool {
  return MERGE_EXACT_KEPT_PER_EVICTED * (tokens - kept) <= kept;
}

// The kept slot of the head's first kept token after its evicted token number i (0-based, in token order): slot s
// has kept_index[s] − s evicted tokens before it, which grows with s, so a binary search finds the first slot with
// more than i. That token is then i + the slot.
fn next_after_evicted(base: u32, kept: u32, i: u32) -> u32 {
  var lo = 0u;
  var hi = kept;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (kept_index[base + mid] - mid <= i) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// The tokens whose window holds kept slot s: merge_targets' window is MERGE_WINDOW = W slots from
// min(max(next, W/2) − W/2, kept − W), `next` a token's first kept slot after it, so next runs from s − W/2 + 1
// (0 when s < W) to s + W/2 (kept when s ≥ kept − W), every next when kept ≤ W: the tokens after kept slot
// s − W/2 and before kept slot s + W/2. x, y: that token range [x, y); z: the kept slots inside it.
fn window_tokens(base: u32, tokens: u32, kept: u32, s: u32) -> vec3<u32> {
  var a = 0u;
  var b = kept;
  if (kept > MERGE_WINDOW) {
    if (s >= MERGE_WINDOW) {
      a = s - MERGE_WINDOW / 2u + 1u;
    }
    if (s + MERGE_WINDOW < kept) {
      b = s + MERGE_WINDOW / 2u;
    }
  }
  var first = 0u;
  if (a > 0u) {
    first = kept_index[base + a - 1u] + 1u;
  }
  var end = tokens;
  if (b < kept) {
    end = kept_index[base + b];
  }
  return vec3<u32>(first, end, b - a);
}

