// Nearest merge (MergeMode 'nearest' in src/compress/options.ts; reference src/compress/merge.ts): each kept value
// becomes (w_j v_j + Σ w_e v_e) / (w_j + Σ w_e) over the evicted tokens e whose target
// (shaders/merge_targets.wgsl) is its slot. One workgroup per head, one thread per four channels, tokens in order
// (the reference's order, so the float sums match it). The merged values go to `merged`, which compact_blocks reads
// in place of the kept tokens' values; keys and positions are never touched. Each thread owns its channels of every
// slot, and only the first thread writes a slot's weight: no atomics.

@group(0) @binding(0) var<uniform> params: MergeValuesParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read> targets: array<u32>;       // [row][stride] from merge_targets
@group(0) @binding(8) var<storage, read_write> merged: array<f32>;  // [out_base + slot][HEAD_DIM], then [slot] weights

const KEPT: u32 = 0xffffffffu;

fn weight(row: u32, t: u32) -> f32 {
  return max(mass[row * params.stride + t], 0.0) + MERGE_WEIGHT_FLOOR;
}

// Adds x to channels 4q .. of slot row `at` (only those below HEAD_DIM exist).
fn add_quad(at: u32, q: u32, x: vec4<f32>) {
  for (var c = 0u; c < 4u; c++) {
    if (4u * q + c < HEAD_DIM) {
      merged[at + 4u * q + c] += x[c];
    }
  }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let head = linear_workgroup_index(wid, nwg);
  // No early return: every invocation reaches the barriers (a workgroup past the heads does no work).
  let in_range = head < params.num_heads;
  var row = 0u;
  var tokens = 0u;
  var kept = 0u;
  var out = 0u;
  if (in_range) {
    row = heads[4u * head];
    tokens = heads[4u * head + 1u];
    kept = heads[4u * head + 2u];
    out = heads[4u * head + 3u];
  }
  let base = row * params.stride;
  let weights = params.weights_offset + out;
  for (var q = lid; q < HEAD_VECS; q += WORKGROUP_SIZE) {
    for (var s = 0u; s < kept; s++) {
      let j = kept_index[base + s];
      let w = weight(row, j);
      if (q == 0u) {
        merged[weights + s] = w;
      }
      let v = w * kv_quad(token_entry_of(row, j), j % BLOCK_SIZE, q, true);
      for (var c = 0u; c < 4u; c++) {
        if (4u * q + c < HEAD_DIM) {
          merged[(out + s) * HEAD_DIM + 4u * q + c] = v[c];
        }
      }
    }
    for (var t = 0u; t < tokens; t++) {
      let dest = targets[base + t];
      if (dest == KEPT || dest >= kept) {
        continue;
      }
      let w = weight(row, t);
      add_quad((out + dest) * HEAD_DIM, q, w * kv_quad(token_entry_of(row, t), t % BLOCK_SIZE, q, true));
      if (q == 0u) {
        merged[weights + dest] += w;
      }
    }
  }
  storageBarrier();
  workgroupBarrier();
  for (var i = lid; i < kept * HEAD_DIM; i += WORKGROUP_SIZE) {
    merged[out * HEAD_DIM + i] /= merged[weights + i / HEAD_DIM];
  }
}
