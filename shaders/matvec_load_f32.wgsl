// Weight access for shaders/matvec_column.wgsl and matvec_wg.wgsl: f32 weights, row_words = in_dim, so pair j is words 2j and 2j+1 of the
// row (the caller never asks for a pair past in_dim: an odd tail goes through weight_last).

@group(0) @binding(2) var<storage, read> w: array<f32>;  // [out_dim][in_dim]

fn weight_pair(base: u32, j: u32) -> vec2<f32> {
  return vec2<f32>(w[base + 2u * j], w[base + 2u * j + 1u]);
}

fn weight_last(base: u32, j: u32) -> f32 {
  return w[base + 2u * j];
}
