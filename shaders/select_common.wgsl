// What the selection kernels share (not a kernel itself; included before shaders/select_threshold.wgsl,
// select_threshold_parts.wgsl, select_compact.wgsl and select_member_counts.wgsl): the joint-selection records
// and the order-preserving key of a score.

// A joint selection: `count` members from `first` on share a budget of `k` tokens.
struct Segment {
  first: u32,
  count: u32,
  k: u32,
}

// One member row of a segment, with the exclusion the host asked for (keys at or above excl_key kept first).
struct Member {
  row: u32,
  len: u32,
  excl_key: u32,
  excl_keep: u32,
}

// Order-preserving map of f32 bits to u32. -0 is folded onto +0 because the reference compares numbers, where
// -0 === 0 is a tie broken by index.
fn order_key(raw: u32) -> u32 {
  let bits = select(raw, 0u, raw == 0x80000000u);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}
