// Nearest merge, pass 3 of 4 (MergeMode 'nearest'; reference src/compress/merge.ts): turns the per-token targets of
// shaders/merge_targets.wgsl into one list per kept slot, so that shaders/merge_values.wgsl sums a slot's tokens in
// registers instead of adding each token into `merged` (the reads and writes there were most of its time). One thread
// per kept slot walks the tokens whose MERGE_WINDOW window holds its slot (the only ones merge_targets can send
// there: about MERGE_WINDOW gaps between kept tokens) in ascending order and chains those whose target is its slot:
// links[LINK_FIRST + row · stride + slot] is the first, links[row · stride + t] the one after t, END closes a list.
// Every token has one target, so each word has one writer. Workgroups over (head, chunk of WORKGROUP_SIZE slots).

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
  let s = (index % params.chunks) * WORKGROUP_SIZE + lid;
  if (s >= kept) {
    return;
  }
  let base = row * params.stride;
  let head_word = params.link_first + base + s;
  // The tokens whose window holds s (shaders/merge_window.wgsl); the kept ones among them hold 0 (the caller
  // zeroes the targets, and merge_targets writes slot + 1).
  let window = window_tokens(base, tokens, kept, s);
  var at = head_word;
  for (var t = window.x; t < window.y; t++) {
    if (targets[base + t] == s + 1u) {
      links[at] = t;
      at = base + t;
    }
  }
  links[at] = END;
}
