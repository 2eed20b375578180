// Nearest merge, pass 1 of 3 (MergeMode 'nearest' in src/compress/options.ts; reference src/compress/merge.ts):
// each kept key of each merged head, divided by its norm (a zero key stays zero), as f32 vec4s (HEAD_VECS per key,
// zero-padded) into the merged buffer at keys_offset + (out_base + slot) · 4 · HEAD_VECS. shaders/merge_targets.wgsl
// then loads its tiles of kept keys from there with plain f32 reads spread over the whole workgroup, instead of
// decoding (and normalizing) every kept key from the paged pools once per workgroup of evicted tokens. One
// thread per kept slot; workgroups over (head, chunk of WORKGROUP_SIZE slots).

@group(0) @binding(0) var<uniform> params: MergeKeptKeysParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(4) var<storage, read> full_pool: array<u32>;
@group(0) @binding(5) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(6) var<storage, read_write> merged: array<f32>;  // normalized keys at keys_offset

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
  let s = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (s >= kept) {
    return;
  }
  let j = kept_index[row * params.stride + s];
  let entry = block_table[row * params.max_blocks + j / BLOCK_SIZE];
  var n = 0.0;
  for (var d = 0u; d < HEAD_DIM; d++) {
    let x = kv_value(entry, j % BLOCK_SIZE, d, false);
    n += x * x;
  }
  var scale = 0.0;
  if (n > 0.0) {
    scale = inverseSqrt(n);
  }
  let base = params.keys_offset + (out + s) * 4u * HEAD_VECS;
  for (var d = 0u; d < 4u * HEAD_VECS; d++) {
    var x = 0.0;
    if (d < HEAD_DIM) {
      x = kv_value(entry, j % BLOCK_SIZE, d, false) * scale;
    }
    merged[base + d] = x;
  }
}
