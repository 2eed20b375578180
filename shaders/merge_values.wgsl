// Nearest merge (MergeMode 'nearest' in src/compress/options.ts; reference src/compress/merge.ts): each kept value
// becomes (w_j v_j + Σ w_e v_e) / (w_j + Σ w_e) over the evicted tokens e whose target
// (shaders/merge_targets.wgsl) is its slot. Pass 4 of 4, gathered by slot: one thread per (run of VALUES_RUN kept
// slots, VALUES_WIDTH octets of channels), workgroups over (head, chunk of WORKGROUP_SIZE threads), looping over the
// slots that some token targets (the others keep their own value); in a head that ranks its windows exactly (few
// evicted tokens), one per (evicted token, VALUES_WIDTH octets), for the slot whose list the token heads. A thread
// follows a slot's list of tokens (shaders/merge_links.wgsl, ascending), so the sums are in registers, in the
// reference's order (the kept value first, then the evicted ones by position), and the slot's value is written once,
// already divided. The old scatter layout (one workgroup per head, every token's sum read and written in `merged`)
// spent most of its time on those reads and writes. Keys and positions are never touched; compact_blocks reads
// `merged` in place of the kept tokens' values.

@group(0) @binding(0) var<uniform> params: MergeValuesParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read> links: array<u32>;         // per-slot lists from merge_links
// [out_base + slot][HEAD_DIM] f32s, vec4s so a quad of a slot is one store.
@group(0) @binding(8) var<storage, read_write> merged: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> full_pool8: array<vec4<u32>>; // full_pool again: eight f16 channels a load
@group(0) @binding(10) var<storage, read> mass_count: array<f32>;   // [row][stride] queries seen (MASS_MEAN only)
@group(0) @binding(11) var<storage, read_write> merged_mask: array<atomic<u32>>; // bit out_base + slot: row written
@group(0) @binding(12) var<storage, read> targets: array<u32>;     // [row][stride] from merge_targets (slot + 1)

// Threads per kept slot.
const GROUPS: u32 = (HEAD_OCTETS + VALUES_WIDTH - 1u) / VALUES_WIDTH;

// Sets channels 4q .. of slot row `at` (f32 index) to x (only those below HEAD_DIM exist).
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

// w times octet o of a token's value (zeros past HEAD_OCTETS).
fn weighted_octet(w: f32, entry: u32, slot: u32, o: u32) -> Octet {
  if (o >= HEAD_OCTETS) {
    return Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  }
  let v = kv_octet(entry, slot, o, true);
  return Octet(w * v.lo, w * v.hi);
}

fn add_octet(a: Octet, b: Octet) -> Octet {
  return Octet(a.lo + b.lo, a.hi + b.hi);
}

// Octet o of slot row `at`, divided by the slot's total weight.
fn store_octet(at: u32, o: u32, a: Octet, total: f32) {
  if (o >= HEAD_OCTETS) {
    return;
  }
  set_quad(at, 2u * o, a.lo / total);
  if (2u * o + 1u < HEAD_VECS) {
    set_quad(at, 2u * o + 1u, a.hi / total);
  }
}

// Kept slot s's merged row for octets o .. o + VALUES_WIDTH − 1, and its mask bit.
fn merge_slot(row: u32, tokens: u32, out: u32, base: u32, s: u32, o: u32) {
  // The tokens that target s, ascending (shaders/merge_links.wgsl: the first + 1); the list is not empty.
  var t = links[params.link_first + base + s] - 1u;
  if (o == 0u) {
    atomicOr(&merged_mask[(out + s) / 32u], 1u << ((out + s) % 32u));
  }
  let j = kept_index[base + s];
  var total = weight(row, j);
  let entry = token_entry_of(row, j);
  // Named registers, not an array: SwiftShader keeps a dynamically indexed private array in memory.
  var a0 = weighted_octet(total, entry, j % BLOCK_SIZE, o);
  var a1 = Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  if (VALUES_WIDTH > 1u) {
    a1 = weighted_octet(total, entry, j % BLOCK_SIZE, o + 1u);
  }
  while (t < tokens) {
    let w = weight(row, t);
    total += w;
    let e = token_entry_of(row, t);
    a0 = add_octet(a0, weighted_octet(w, e, t % BLOCK_SIZE, o));
    if (VALUES_WIDTH > 1u) {
      a1 = add_octet(a1, weighted_octet(w, e, t % BLOCK_SIZE, o + 1u));
    }
    t = links[base + t];
  }
  let at = (out + s) * HEAD_DIM;
  store_octet(at, o, a0, total);
  if (VALUES_WIDTH > 1u) {
    store_octet(at, o + 1u, a1, total);
  }
}

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
  let tokens = heads[4u * head + 1u];
  let kept = heads[4u * head + 2u];
  let out = heads[4u * head + 3u];
  let i = (index % params.chunks) * WORKGROUP_SIZE + lid;
  let o = (i % GROUPS) * VALUES_WIDTH;
  let base = row * params.stride;
  if (ranks_window_exactly(tokens, kept)) {
    // Few evicted tokens (shaders/merge_window.wgsl): a thread per (evicted token, octet group), working where the
    // token heads its target's list, instead of threads walking runs of slots nothing targets.
    let e = i / GROUPS;
    if (e >= tokens - kept) {
      return;
    }
    let t = e + next_after_evicted(base, kept, e);
    let s = targets[base + t] - 1u;
    if (links[params.link_first + base + s] == t + 1u) {
      merge_slot(row, tokens, out, base, s, o);
    }
    return;
  }
  let first = (i / GROUPS) * VALUES_RUN;
  if (first >= kept) {
    return;
  }
  let last = min(kept, first + VALUES_RUN);
  var s = first;
  // One trip per slot that some evicted token targets (plus one): a slot with an empty list keeps its own value,
  // which compact_blocks reads from the pool (its mask bit stays 0). SwiftShader runs every branch with lanes masked,
  // so only a loop's trip count saves work: a compression that evicts a few tokens pays for their slots only.
  loop {
    while (s < last && links[params.link_first + base + s] == 0u) {
      s++;
    }
    if (s >= last) {
      break;
    }
    merge_slot(row, tokens, out, base, s, o);
    s++;
  }
}
