// Which tokens the nearest merge can send to a kept slot (not a kernel itself; included by
// shaders/merge_links.wgsl and merge_kept_keys.wgsl). The including kernel binds `kept_index` (u32 [row][stride],
// ascending) and has MERGE_WINDOW.

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
