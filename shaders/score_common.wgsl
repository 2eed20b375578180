// Helpers of the scoring kernels (not a kernel itself): protection of sinks and the recent window, exactly as
// BasePolicy.score() in src/compress/policy.ts applies it on the CPU.

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
