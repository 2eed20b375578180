// Weight access for shaders/matvec_column.wgsl and matvec_wg.wgsl: f16 pairs read natively (needs `enable f16;`, emitted by the spec).
// Same bytes and contract as shaders/matvec_load_f16_packed.wgsl.

@group(0) @binding(2) var<storage, read> w: array<vec2<f16>>;  // [out_dim][row_words]

fn weight_pair(base: u32, j: u32) -> vec2<f32> {
  return vec2<f32>(w[base + j]);
}

fn weight_last(base: u32, j: u32) -> f32 {
  return f32(w[base + j].x);
}
