// Radix select of a top-k threshold: one workgroup per SEGMENT, a segment being one row (per-row top-k) or the
// union of several rows (joint budgets: a layer's heads, or every head). Scores are mapped to order-preserving
// u32 keys and the k-th largest key is found with four 8-bit passes of a 256-bin workgroup histogram, so the
// result is exact (no float comparisons, no sorting) and ties are resolved afterwards by index. Barriers are what
// a software adapter pays for (every barrier switches every group of lanes): WORKGROUP_SIZE threads (16 by
// default) share the 256 bins, and one thread walks the bins down to the chosen one, so a digit costs three
// barriers instead of the twenty of a parallel scan:
//   thresholds[seg] = {key T, keepEqual}: keep every key > T and the first keepEqual keys == T.
// k larger than the segment is clamped to its size (T = smallest key, keepEqual = how many equal it); k = 0
// gives T = 0xffffffff, keepEqual = 0 (no finite or infinite score maps to that key; NaN is not a valid score).
//
// Exclusions (adakv): member m may exclude its own top tokens, given as a threshold {key, keepEqual} from an
// earlier run of this kernel. Those tokens are its highest-ranked ones, so they are all keys > key plus keepEqual
// keys == key; the histogram counts keys ≤ key and subtracts keepEqual from key's bin, which is the exact
// histogram of the remaining tokens without knowing WHICH equal tokens were excluded.
//
// With write_counts, member_counts[m] = {keys > T, keys == T} over ALL tokens of the member (exclusions
// included): the host turns these into per-head counts (src/compress/budgets-gpu.ts).

@group(0) @binding(0) var<uniform> params: SelectParams;
@group(0) @binding(1) var<storage, read> scores: array<u32>;         // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> lengths: array<u32>;        // [row] (per-row mode)
@group(0) @binding(3) var<storage, read> ks: array<u32>;             // per-row: k [row]; segmented: [seg][3] {first member, members, k}
@group(0) @binding(4) var<storage, read> members: array<u32>;        // segmented: [m][2] {row, length}
@group(0) @binding(5) var<storage, read> exclusions: array<u32>;     // [m][2] {key, keepEqual} when use_exclusion
@group(0) @binding(6) var<storage, read_write> thresholds: array<u32>;            // [seg][2] {key, keepEqual}
@group(0) @binding(7) var<storage, read_write> member_counts: array<atomic<u32>>; // [m][2] {greater, equal}, zeroed by the host

const BINS: u32 = 256u;
const NO_KEY: u32 = 0xffffffffu;

var<workgroup> hist: array<atomic<u32>, BINS>;
var<workgroup> chosen_bin: u32;
var<workgroup> chosen_above: u32;
var<workgroup> total_shared: u32;

struct Segment {
  first: u32,
  count: u32,
  k: u32,
}

struct Member {
  row: u32,
  len: u32,
  excl_key: u32,
  excl_keep: u32,
}

// Order-preserving map of f32 bits to u32. -0 is folded onto +0 because the reference compares numbers, where
// -0 === 0 is a tie broken by index.
fn order_key(raw: u32) -> u32 {
  let bits = select(raw, 0u, raw == 0x80000000u);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

fn segment_of(seg: u32) -> Segment {
  if (params.segmented != 0u) {
    return Segment(ks[seg * 3u], ks[seg * 3u + 1u], ks[seg * 3u + 2u]);
  }
  return Segment(seg, 1u, ks[seg]);
}

fn member_of(m: u32) -> Member {
  var member = Member(m, 0u, NO_KEY, 0u);
  if (params.segmented != 0u) {
    member.row = members[m * 2u];
    member.len = members[m * 2u + 1u];
  } else {
    member.len = lengths[m];
  }
  if (params.use_exclusion != 0u) {
    member.excl_key = exclusions[m * 2u];
    member.excl_keep = exclusions[m * 2u + 1u];
  }
  return member;
}

// Histogram of the 8-bit digit at `shift` of the segment's (non-excluded) keys whose higher digits equal
// `prefix` under `mask`.
fn build_histogram(lid: u32, seg: Segment, prefix: u32, mask: u32, shift: u32) {
  for (var b = lid; b < BINS; b += WORKGROUP_SIZE) {
    atomicStore(&hist[b], 0u);
  }
  workgroupBarrier();
  for (var i = 0u; i < seg.count; i++) {
    let member = member_of(seg.first + i);
    let base = member.row * params.stride;
    for (var t = lid; t < member.len; t += WORKGROUP_SIZE) {
      let key = order_key(scores[base + t]);
      if (key <= member.excl_key && (key & mask) == prefix) {
        atomicAdd(&hist[(key >> shift) & 0xffu], 1u);
      }
    }
    if (lid == 0u && member.excl_keep != 0u && (member.excl_key & mask) == prefix) {
      atomicSub(&hist[(member.excl_key >> shift) & 0xffu], member.excl_keep);
    }
  }
  workgroupBarrier();
}

// One thread walks the bins from the top: the bin holding the remaining-th largest key, the count above it, and
// (digit 0) the total. `remaining` is uniform; the result goes through workgroup memory.
fn choose_bin(lid: u32, remaining_in: u32, first_digit: bool, k: u32) {
  if (lid == 0u) {
    var total = 0u;
    for (var b = 0u; b < BINS; b++) {
      total += atomicLoad(&hist[b]);
    }
    var remaining = remaining_in;
    if (first_digit) {
      remaining = min(k, total);
    }
    total_shared = remaining;
    var above = 0u;
    var bin = 0u;
    for (var b = BINS; b > 0u; b--) {
      let count = atomicLoad(&hist[b - 1u]);
      if (above < remaining && remaining <= above + count) {
        bin = b - 1u;
        break;
      }
      above += count;
    }
    chosen_bin = bin;
    chosen_above = above;
  }
  workgroupBarrier();
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  if (group >= params.num_segments) {
    return;
  }
  let seg = segment_of(group);
  var prefix = 0u;
  var mask = 0u;
  var remaining = 0u;
  for (var digit = 0u; digit < 4u; digit++) {
    let shift = 24u - 8u * digit;
    build_histogram(lid, seg, prefix, mask, shift);
    // Exactly one bin holds the remaining-th largest key when 0 < remaining ≤ the count under the prefix.
    choose_bin(lid, remaining, digit == 0u, seg.k);
    remaining = total_shared;
    let bin = chosen_bin;
    let above = chosen_above;
    // Everyone has read the choice before the next digit's histogram clears the bins.
    workgroupBarrier();
    if (remaining > 0u) {
      prefix |= bin << shift;
      mask |= 0xffu << shift;
      remaining -= above;
    }
  }
  // After four passes `remaining` is how many keys equal to the threshold are kept; mask stays 0 only when
  // nothing is kept (k = 0 or an empty segment).
  let key = select(prefix, NO_KEY, mask == 0u);
  if (lid == 0u) {
    thresholds[group * 2u] = key;
    thresholds[group * 2u + 1u] = select(remaining, 0u, mask == 0u);
  }
  if (params.write_counts != 0u) {
    for (var i = 0u; i < seg.count; i++) {
      let m = seg.first + i;
      let member = member_of(m);
      let base = member.row * params.stride;
      var greater = 0u;
      var equal = 0u;
      for (var t = lid; t < member.len; t += WORKGROUP_SIZE) {
        let k2 = order_key(scores[base + t]);
        greater += select(0u, 1u, k2 > key);
        equal += select(0u, 1u, k2 == key);
      }
      // One atomic per thread and member, not per token: rows can be tens of thousands of tokens long.
      if (greater != 0u) {
        atomicAdd(&member_counts[m * 2u], greater);
      }
      if (equal != 0u) {
        atomicAdd(&member_counts[m * 2u + 1u], equal);
      }
    }
  }
}
