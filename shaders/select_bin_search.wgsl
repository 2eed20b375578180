// The bin search of the radix selects (not a kernel itself; included before shaders/select_threshold.wgsl and
// select_threshold_parts.wgsl, after select_common.wgsl). Each of those keeps its histograms in its own layout
// and defines the accessor this search reads them through:
//   fn histogram_count(word: u32) -> u32   // the count of histogram word `word` (a digit's offset + its bin)
// select_threshold's is one workgroup's histogram, select_threshold_parts' the sum over a segment's parts.

// One digit: the keys' bits [shift, shift + width).
struct Digit {
  shift: u32,
  bins: u32,
  // Where its histogram starts among the words histogram_count reads: every digit has its own, all cleared up
  // front, so no barrier has to separate one digit's readers from the next digit's clearing.
  offset: u32,
}

const BLOCK: u32 = 16u;

var<workgroup> block_sums: array<u32, 2048u / BLOCK>;
// choose_bin's result: {bin, count above it, remaining (digit 0: min(k, total)), count in the bin}.
var<workgroup> chosen: vec4<u32>;

// The bin holding the remaining-th largest key, the count above it, and (digit 0, where remaining = min(k,
// total)) the clamped remaining. Block sums in parallel, then one thread walks blocks and one block from the top.
// The result goes through workgroup memory (`chosen`), behind the final barrier.
fn choose_bin(lid: u32, digit: Digit, remaining_in: u32, first_digit: bool, k: u32) {
  let blocks = digit.bins / BLOCK;
  for (var b = lid; b < blocks; b += WORKGROUP_SIZE) {
    var sum = 0u;
    for (var j = 0u; j < BLOCK; j++) {
      sum += histogram_count(digit.offset + b * BLOCK + j);
    }
    block_sums[b] = sum;
  }
  workgroupBarrier();
  if (lid == 0u) {
    var remaining = remaining_in;
    if (first_digit) {
      var total = 0u;
      for (var b = 0u; b < blocks; b++) {
        total += block_sums[b];
      }
      remaining = min(k, total);
    }
    // The first block (then bin) from the top whose cumulative count reaches `remaining`; when remaining > 0 the
    // count above it is below remaining. remaining = 0 picks anything: the caller ignores it.
    var above = 0u;
    var block = 0u;
    for (var b = blocks; b > 0u; b--) {
      let count = block_sums[b - 1u];
      if (remaining <= above + count) {
        block = b - 1u;
        break;
      }
      above += count;
    }
    var bin = block * BLOCK;
    // The walk's last count is the chosen bin's: it stops there, or runs down to the block's first bin.
    var in_bin = 0u;
    for (var j = BLOCK; j > 0u; j--) {
      let count = histogram_count(digit.offset + block * BLOCK + j - 1u);
      in_bin = count;
      if (remaining <= above + count) {
        bin = block * BLOCK + j - 1u;
        break;
      }
      above += count;
    }
    chosen = vec4<u32>(bin, above, remaining, in_bin);
  }
  workgroupBarrier();
}
