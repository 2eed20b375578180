// Nearest merge, pass 3 of 4 (MergeMode 'nearest'; reference src/compress/merge.ts): turns the per-token targets of
// shaders/merge_targets.wgsl (slot + 1; 0 for kept tokens) into one list per kept slot, so that
// shaders/merge_values.wgsl sums a slot's tokens in registers instead of adding each token into `merged` (the reads
// and writes there were most of its time). A list runs over the tokens that target the slot, ascending:
// links[LINK_FIRST + row · stride + slot] holds the first + 1 (0: an empty list; MergeValuesKernel.encode zeroes
// those words before the passes), links[row · stride + t] the one after t, END closes it. Every token targets only slots whose window
// (shaders/merge_window.wgsl) holds it, so either side walks at most such a window of tokens; each word has one
// writer:
// - a head that evicts many tokens: one thread per kept slot walks the tokens whose window holds its slot, in order,
//   and chains those that target it;
// - a head that ranks its windows exactly (ranks_window_exactly: it evicts at most a quarter of what it keeps, as a
//   decode-schedule compression does): one thread per evicted token finds, in its target's window, the next token
//   with the same target, and whether one comes before it (if none, it heads the list). Threads per kept slot there
//   would walk windows nothing targets.
// Workgroups over (head, chunk of WORKGROUP_SIZE slots or evicted tokens).

@group(0) @binding(0) var<uniform> params: MergeLinksParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> targets: array<u32>;       // [row][stride] from merge_targets
@group(0) @binding(4) var<storage, read_write> links: array<u32>;   // [row][stride] next token, then [row][stride] first

const END: u32 = 0xffffffffu;

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
  let base = row * params.stride;
  let s = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (ranks_window_exactly(tokens, kept)) {
    link_evicted(base, tokens, kept, s);
    return;
  }
  if (s >= kept) {
    return;
  }
  let head_word = params.link_first + base + s;
  // The tokens whose window holds s (shaders/merge_window.wgsl); the kept ones among them hold 0 (the targets are
  // zeroed before the passes, and merge_targets writes slot + 1).
  let window = window_tokens(base, tokens, kept, s);
  var at = head_word;
  var link = 1u;
  for (var t = window.x; t < window.y; t++) {
    if (targets[base + t] == s + 1u) {
      links[at] = t + link;
      at = base + t;
      link = 0u;
    }
  }
  // A list ends in END; an empty one keeps the first word 0 it was zeroed to.
  if (link == 0u) {
    links[at] = END;
  }
}

// Evicted token number i (in token order) of a head that ranks its windows exactly: its link to the next token with
// its target, and the list's first word if no token before it has that target.
fn link_evicted(base: u32, tokens: u32, kept: u32, i: u32) {
  if (i >= tokens - kept) {
    return;
  }
  let t = i + next_after_evicted(base, kept, i);
  let wanted = targets[base + t];
  let window = window_tokens(base, tokens, kept, wanted - 1u);
  var first = true;
  for (var u = window.x; u < t; u++) {
    if (targets[base + u] == wanted) {
      first = false;
      break;
    }
  }
  if (first) {
    links[params.link_first + base + wanted - 1u] = t + 1u;
  }
  var after = END;
  for (var u = t + 1u; u < window.y; u++) {
    if (targets[base + u] == wanted) {
      after = u;
      break;
    }
  }
  links[base + t] = after;
}
