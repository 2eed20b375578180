// CaM's merge, pass 2 of 2 (MergeMode 'cam' in src/compress/options.ts; reference src/compress/merge.ts): kept
// slot s becomes v_s + Σ G_f over the gaps f in [s − CAM_MERGE_SPAN + 1, s] (shaders/merge_cam_gaps.wgsl): the
// tokens of gap f reach slots f .. f + span_f − 1, so slot s is reached by exactly those gaps. One thread per
// (slot, four channels); workgroups over (head, chunk of WORKGROUP_SIZE of its kept · HEAD_VECS (slot, quad) pairs). The merged values go to
// `merged` for compact_blocks.

@group(0) @binding(0) var<uniform> params: MergeCamParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> merged: array<vec4<f32>>; // [out_base + slot][HEAD_DIM]; gap sums at gaps_offset (f32 indices)

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
  let kept = heads[4u * head + 2u];
  let out = heads[4u * head + 3u];
  let i = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (i >= kept * HEAD_VECS) {
    return;
  }
  let s = i / HEAD_VECS;
  let q = i % HEAD_VECS;
  let j = kept_index[row * params.stride + s];
  var v = kv_quad(token_entry_of(row, j), j % BLOCK_SIZE, q, true);
  var f = 0u;
  if (s + 1u > CAM_MERGE_SPAN) {
    f = s + 1u - CAM_MERGE_SPAN;
  }
  for (; f <= s; f++) {
    let g = params.gaps_offset + (out + f) * HEAD_DIM + 4u * q;
    if (HEAD_DIM % 4u == 0u && params.gaps_offset % 4u == 0u) {
      v += merged[g / 4u];
    } else {
      for (var c = 0u; c < 4u; c++) {
        if (4u * q + c < HEAD_DIM) {
          v[c] += merged[(g + c) / 4u][(g + c) % 4u];
        }
      }
    }
  }
  if (HEAD_DIM % 4u == 0u) {
    merged[(out + s) * HEAD_VECS + q] = v;
  } else {
    for (var c = 0u; c < 4u; c++) {
      let at = (out + s) * HEAD_DIM + 4u * q + c;
      if (4u * q + c < HEAD_DIM) {
        merged[at / 4u][at % 4u] = v[c];
      }
    }
  }
}
