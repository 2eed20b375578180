// Nearest merge (MergeMode 'nearest' in src/compress/options.ts; reference src/compress/merge.ts): each kept value
// becomes (w_j v_j + Σ w_e v_e) / (w_j + Σ w_e) over the evicted tokens e whose target
// (shaders/merge_targets.wgsl) is its slot. One workgroup per head, one thread per eight channels (one load of an f16
// pool; the token's weight, target and block are read once for them), tokens in order (the reference's order, so the float
// sums match it). The merged values go to `merged`, which compact_blocks reads
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
// [out_base + slot][HEAD_DIM] f32s, then [slot] weights; vec4s so a quad of a slot is one load and one store.
@group(0) @binding(8) var<storage, read_write> merged: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> full_pool8: array<vec4<u32>>; // full_pool again: eight f16 channels a load
@group(0) @binding(10) var<storage, read> mass_count: array<f32>;   // [row][stride] queries seen (MASS_MEAN only)

const KEPT: u32 = 0xffffffffu;

// Adds x to channels 4q .. of slot row `at` (f32 index; only those below HEAD_DIM exist).
fn add_quad(at: u32, q: u32, x: vec4<f32>) {
  if (HEAD_DIM % 4u == 0u) {
    merged[at / 4u + q] += x;
    return;
  }
  for (var c = 0u; c < 4u; c++) {
    let i = at + 4u * q + c;
    if (4u * q + c < HEAD_DIM) {
      merged[i / 4u][i % 4u] += x[c];
    }
  }
}

// Sets channels 4q .. of slot row `at` to x.
fn set_quad(at: u32, q: u32, x: vec4<f32>) {
  if (HEAD_DIM % 4u == 0u) {
    merged[at / 4u + q] = x;
    return;
  }
  for (var c = 0u; c < 4u; c++) {
    let i = at + 4u * q + c;
    if (4u * q + c < HEAD_DIM) {
      merged[i / 4u][i % 4u] = x[c];
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
  for (var o = lid; o < HEAD_OCTETS; o += WORKGROUP_SIZE) {
    // The second quad of the octet (none past HEAD_VECS).
    let q0 = 2u * o;
    let q1 = q0 + 1u;
    let second = q1 < HEAD_VECS;
    for (var s = 0u; s < kept; s++) {
      let j = kept_index[base + s];
      let w = weight(row, j);
      if (o == 0u) {
        merged[(weights + s) / 4u][(weights + s) % 4u] = w;
      }
      let v = kv_octet(token_entry_of(row, j), j % BLOCK_SIZE, o, true);
      let at = (out + s) * HEAD_DIM;
      set_quad(at, q0, w * v.lo);
      if (second) {
        set_quad(at, q1, w * v.hi);
      }
    }
    for (var t = 0u; t < tokens; t++) {
      let dest = targets[base + t];
      if (dest == KEPT || dest >= kept) {
        continue;
      }
      let w = weight(row, t);
      let v = kv_octet(token_entry_of(row, t), t % BLOCK_SIZE, o, true);
      let at = (out + dest) * HEAD_DIM;
      add_quad(at, q0, w * v.lo);
      if (second) {
        add_quad(at, q1, w * v.hi);
      }
      if (o == 0u) {
        merged[(weights + dest) / 4u][(weights + dest) % 4u] += w;
      }
    }
  }
  storageBarrier();
  workgroupBarrier();
  if (HEAD_DIM % 4u == 0u) {
    for (var i = lid; i < kept * HEAD_VECS; i += WORKGROUP_SIZE) {
      let wi = weights + i / HEAD_VECS;
      merged[out * HEAD_VECS + i] /= merged[wi / 4u][wi % 4u];
    }
    return;
  }
  for (var i = lid; i < kept * HEAD_DIM; i += WORKGROUP_SIZE) {
    let at = out * HEAD_DIM + i;
    let wi = weights + i / HEAD_DIM;
    merged[at / 4u][at % 4u] /= merged[wi / 4u][wi % 4u];
  }
}
