// out[r][out_offset + c] (+)= Σ_k x[r][k] · w[c][k], one thread per output column and block of ROW_BLOCK rows, no
// workgroup memory and no barriers: each weight is read once per block of rows, so a batch of ≤ ROW_BLOCK decode
// tokens reads the weights once, as a single token does (the variant for SwiftShader; shaders/matvec_wg.wgsl is
// the one for real GPUs). The weight format comes from a library (shaders/matvec_load_*.wgsl: binding 2,
// weight_pair and weight_last). out_stride / out_offset let a weight split by rows across several buffers write
// its column range of one [rows][out_stride] output. Accumulation is in f32.

@group(0) @binding(0) var<uniform> params: MatvecParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][in_dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][out_stride]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  let blocks = (params.rows + ROW_BLOCK - 1u) / ROW_BLOCK;
  if (i >= params.out_dim * blocks) {
    return;
  }
  let c = i % params.out_dim;
  let r0 = (i / params.out_dim) * ROW_BLOCK;
  let nr = min(ROW_BLOCK, params.rows - r0);
  let base = c * params.row_words;
  let pairs = params.in_dim / 2u;
  var acc: array<f32, ROW_BLOCK>;
  for (var j = 0u; j < pairs; j++) {
    let wv = weight_pair(base, j);
    for (var rr = 0u; rr < nr; rr++) {
      let xi = (r0 + rr) * params.in_dim + 2u * j;
      // One product at a time, in column order: the sum the tiled matmul forms, whatever the weight format.
      acc[rr] += x[xi] * wv.x;
      acc[rr] += x[xi + 1u] * wv.y;
    }
  }
  if (params.in_dim % 2u == 1u) {
    let wl = weight_last(base, pairs);
    for (var rr = 0u; rr < nr; rr++) {
      acc[rr] += x[(r0 + rr) * params.in_dim + params.in_dim - 1u] * wl;
    }
  }
  for (var rr = 0u; rr < nr; rr++) {
    let o = (r0 + rr) * params.out_stride + params.out_offset + c;
    if (ACCUMULATE) {
      out[o] = out[o] + acc[rr];
    } else {
      out[o] = acc[rr];
    }
  }
}
