// Helpers of the scoring kernels (not a kernel itself): protection of sinks and the recent window, exactly as
// BasePolicy.score() in src/compress/policy.ts applies it on the CPU, and exact mulberry32 draws for policies
// that score at random.

// +Inf through a runtime bitcast: a const-expression may not evaluate to an infinity in WGSL.
fn protected_score() -> f32 {
  var bits = 0x7f800000u;
  return bitcast<f32>(bits);
}

// `recent_start` = max(0, seqLen − protected recent): the host clamps it so a u32 compare matches the CPU's
// `pos >= seqLen − recent` even when that difference is negative.
fn protect_score(raw: f32, pos: u32, sinks: u32, recent_start: u32) -> f32 {
  if (pos < sinks || pos >= recent_start) {
    return protected_score();
  }
  return raw;
}

// Draw number `index` (0-based) of mulberry32(stream), as src/random.ts draws it: its state only ever adds
// 0x6d2b79f5, so draw i is the output hash of stream + (i + 1)·0x6d2b79f5 and every token computes its own draw
// independently.
fn mulberry32_draw(stream: u32, index: u32) -> u32 {
  var t = stream + (index + 1u) * 0x6d2b79f5u;
  t = (t ^ (t >> 15u)) * (t | 1u);
  t = t ^ (t + (t ^ (t >> 7u)) * (t | 61u));
  return t ^ (t >> 14u);
}

// Math.fround(u / 2^32) exactly: round-to-nearest-even of u to 24 significant bits in integer arithmetic,
// because WGSL leaves the rounding of a u32 → f32 conversion to the implementation.
fn unit_interval(u: u32) -> f32 {
  if (u < 0x1000000u) {
    return ldexp(f32(u), -32);
  }
  let shift = 8u - countLeadingZeros(u);
  var mantissa = u >> shift;
  let rest = u & ((1u << shift) - 1u);
  let half = 1u << (shift - 1u);
  if (rest > half || (rest == half && (mantissa & 1u) == 1u)) {
    mantissa += 1u;
  }
  return ldexp(f32(mantissa), i32(shift) - 32);
}
