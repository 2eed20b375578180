// Copies rows of params.words_per_row u32 words from src to dst (two distinct buffers), one workgroup per
// (source row, destination row) pair; rows count from a word offset into each buffer. It stands in for
// copyBufferToBuffer inside a model forward, which then stays one compute pass.

@group(0) @binding(0) var<uniform> params: CopyRowsParams;
@group(0) @binding(1) var<storage, read> rows: array<vec2<u32>>;   // (source row, destination row)
@group(0) @binding(2) var<storage, read> src: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let index = linear_workgroup_index(wid, nwg);
  if (index >= params.num_rows) {
    return;
  }
  let row = rows[index];
  let src_word = params.src_offset + row.x * params.words_per_row;
  let dst_word = params.dst_offset + row.y * params.words_per_row;
  for (var i = lid; i < params.words_per_row; i += WORKGROUP_SIZE) {
    dst[dst_word + i] = src[src_word + i];
  }
}
