// Weight access for shaders/matvec_column.wgsl and matvec_wg.wgsl: f16 pairs packed in u32 words (packF16Rows layout), any device.
// weight_pair(base, j) = columns 2j and 2j+1 of the row starting at word `base`; weight_last(base, j) = column 2j.

@group(0) @binding(2) var<storage, read> w: array<u32>;  // [out_dim][row_words]

fn weight_pair(base: u32, j: u32) -> vec2<f32> {
  return unpack2x16float(w[base + j]);
}

fn weight_last(base: u32, j: u32) -> f32 {
  return unpack2x16float(w[base + j]).x;
}
