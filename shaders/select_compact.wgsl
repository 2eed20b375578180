// Applies a top-k threshold (from shaders/select_threshold.wgsl) to one row per workgroup, writing the kept
// logical indices in ascending order and their count. Token t is kept iff key > T, or key == T and fewer than
// keepEqual earlier tokens have key == T. So the output slot of a kept token at t is
//   (keys > T before t) + min(keys == T before t, keepEqual),
// which needs ONE prefix sum of the pair (greater, equal) — done per chunk of WORKGROUP_SIZE × ITEMS tokens,
// each thread owning ITEMS consecutive tokens. One thread scans the WORKGROUP_SIZE partial sums serially: three
// barriers per chunk, where a parallel scan takes 2·log2(WORKGROUP_SIZE) + 1 (barriers are what a software
// adapter pays for; 64 serial additions are cheap anywhere).

@group(0) @binding(0) var<uniform> params: CompactSelectParams;
@group(0) @binding(1) var<storage, read> scores: array<u32>;          // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> lengths: array<u32>;         // [row]
@group(0) @binding(3) var<storage, read> thresholds: array<u32>;      // [i][2] {key, keepEqual}, i = mapped index
@group(0) @binding(4) var<storage, read_write> kept: array<u32>;      // [row][stride]
@group(0) @binding(5) var<storage, read_write> kept_counts: array<u32>; // [row]

const CHUNK: u32 = WORKGROUP_SIZE * ITEMS;

var<workgroup> scan: array<vec2<u32>, WORKGROUP_SIZE>;
var<workgroup> chunk_total: vec2<u32>;
var<workgroup> row_len: u32;


@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg);
  if (i >= params.num_rows) {
    return;
  }
  // Rows of one sequence are spread over the table ([layer][slot][head]); the map picks them out.
  let row = params.row_base + (i / params.group_rows) * params.group_stride + i % params.group_rows;
  if (lid == 0u) {
    row_len = lengths[row];
  }
  // The chunk loop holds barriers, so its bound must be provably uniform.
  let len = workgroupUniformLoad(&row_len);
  let threshold = thresholds[i * 2u];
  let keep_equal = thresholds[i * 2u + 1u];
  let base = row * params.stride;
  var carry = vec2<u32>(0u, 0u);
  for (var start = 0u; start < len; start += CHUNK) {
    let first = start + lid * ITEMS;
    var keys: array<u32, ITEMS>;
    var own = vec2<u32>(0u, 0u);
    for (var j = 0u; j < ITEMS; j++) {
      let t = first + j;
      // Past the row: a key that is neither > T nor == T (T is never 0: that would be a NaN's key).
      var key = 0u;
      if (t < len) {
        key = order_key(scores[base + t]);
      }
      keys[j] = key;
      own += vec2<u32>(select(0u, 1u, key > threshold), select(0u, 1u, key == threshold && t < len));
    }
    scan[lid] = own;
    workgroupBarrier();
    if (lid == 0u) {
      // Exclusive prefix sums in place, and the chunk's total.
      var running = vec2<u32>(0u, 0u);
      for (var w = 0u; w < WORKGROUP_SIZE; w++) {
        let value = scan[w];
        scan[w] = running;
        running += value;
      }
      chunk_total = running;
    }
    workgroupBarrier();
    var before = carry + scan[lid];
    for (var j = 0u; j < ITEMS; j++) {
      let key = keys[j];
      let t = first + j;
      if (t < len) {
        if (key > threshold) {
          kept[base + before.x + min(before.y, keep_equal)] = t;
          before.x += 1u;
        } else if (key == threshold) {
          if (before.y < keep_equal) {
            kept[base + before.x + before.y] = t;
          }
          before.y += 1u;
        }
      }
    }
    carry += chunk_total;
    // The next chunk overwrites scan[]: everyone must have read the total first.
    workgroupBarrier();
  }
  if (lid == 0u) {
    kept_counts[row] = carry.x + min(carry.y, keep_equal);
  }
}
