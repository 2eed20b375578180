// The radix select of shaders/select_threshold.wgsl (same keys, same result, bit for bit) for a FEW LONG segments:
// a joint budget over many heads is one segment, which that kernel gives one workgroup. Here every segment's full
// reads are spread over `parts` workgroups, all adding into the segment's histogram in storage with atomics, and
// one workgroup per segment chooses each digit's bin between them. Always three digits of 11, 11 and 10 bits, in
// four dispatches of this kernel, told apart by params.phase:
//   0 (parts per segment): digit 0's histogram over the rows;
//   1 (one per segment):   choose digit 0's bin (state: prefix, mask, remaining);
//   2 (parts per segment): digit 1's histogram over the keys under the prefix, which are also appended to the
//                          part's candidate list;
//   3 (one per segment):   choose digit 1's bin, take digit 2's histogram from the candidate list (from the rows
//                          if it overflowed: slower, same result), choose it and write the threshold.
// Exclusions (adakv) as in select_threshold.wgsl: keys above a member's exclusion key are not read, and the
// choosing workgroup takes the member's keepEqual keys == its key out of that key's bin.

@group(0) @binding(0) var<uniform> params: SelectPartsParams;
@group(0) @binding(1) var<storage, read> scores: array<u32>;        // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> segments: array<u32>;      // [seg][3] {first member, members, k}
@group(0) @binding(3) var<storage, read> members: array<u32>;       // [m][2] {row, length}
@group(0) @binding(4) var<storage, read> exclusions: array<u32>;    // [m][2] {key, keepEqual} when use_exclusion
@group(0) @binding(5) var<storage, read_write> thresholds: array<u32>; // [seg][2] {key, keepEqual}
// [seg] {prefix, mask, remaining, 0} then [seg][part] {three histograms, candidate count}, zeroed by the host;
// then [seg][part][candidate_capacity] candidate keys.
@group(0) @binding(6) var<storage, read_write> scratch: array<atomic<u32>>;

const HIST_WORDS: u32 = 5120u;
const PART_WORDS: u32 = 5121u; // three histograms and the part's candidate count
const STATE_WORDS: u32 = 4u;
const NO_KEY: u32 = 0xffffffffu;

// The choosing workgroup's segment's first part's histograms (main's `hists`), for histogram_count.
var<private> segment_hists: u32;

fn digit_of(d: u32) -> Digit {
  if (d == 0u) {
    return Digit(21u, 2048u, 0u);
  }
  if (d == 1u) {
    return Digit(10u, 2048u, 2048u);
  }
  return Digit(0u, 1024u, 4096u);
}

fn segment_of(seg: u32) -> Segment {
  return Segment(segments[seg * 3u], segments[seg * 3u + 1u], segments[seg * 3u + 2u]);
}

fn member_of(m: u32) -> Member {
  var member = Member(members[m * 2u], members[m * 2u + 1u], NO_KEY, 0u);
  if (params.use_exclusion != 0u) {
    member.excl_key = exclusions[m * 2u];
    member.excl_keep = exclusions[m * 2u + 1u];
  }
  return member;
}

fn bin_word(base: u32, key: u32, digit: Digit) -> u32 {
  return base + digit.offset + ((key >> digit.shift) & (digit.bins - 1u));
}

// Digit 0 (collect = false) or digit 1 with the candidates appended (collect = true) over this thread's share of
// every member: thread g of the segment's parts × WORKGROUP_SIZE threads reads one contiguous run of each member.
fn read_rows(g: u32, threads: u32, seg: Segment, base: u32, list: u32, prefix: u32, mask: u32, digit: Digit, collect: bool) {
  for (var i = 0u; i < seg.count; i++) {
    let member = member_of(seg.first + i);
    let row = member.row * params.stride;
    let span = (member.len + threads - 1u) / threads;
    let start = min(g * span, member.len);
    let end = min(start + span, member.len);
    // Four tokens per iteration, one vector test: a software adapter pays per loop iteration and per branch.
    var t = start;
    for (; t + 3u < end; t += 4u) {
      let keys = vec4<u32>(
        order_key(scores[row + t]),
        order_key(scores[row + t + 1u]),
        order_key(scores[row + t + 2u]),
        order_key(scores[row + t + 3u]),
      );
      let hit = (keys <= vec4<u32>(member.excl_key)) & ((keys & vec4<u32>(mask)) == vec4<u32>(prefix));
      if (any(hit)) {
        for (var j = 0u; j < 4u; j++) {
          if (hit[j]) {
            take(keys[j], base, list, digit, collect);
          }
        }
      }
    }
    for (; t < end; t++) {
      let key = order_key(scores[row + t]);
      if (key <= member.excl_key && (key & mask) == prefix) {
        take(key, base, list, digit, collect);
      }
    }
  }
}

fn take(key: u32, base: u32, list: u32, digit: Digit, collect: bool) {
  atomicAdd(&scratch[bin_word(base, key, digit)], 1u);
  if (collect) {
    let slot = atomicAdd(&scratch[base + HIST_WORDS], 1u);
    if (slot < params.candidate_capacity) {
      atomicStore(&scratch[list + slot], key);
    }
  }
}

// Takes every member's excluded keys == its exclusion key back out of the digit's histogram (lid 0 only).
fn subtract_exclusions(seg: Segment, base: u32, prefix: u32, mask: u32, digit: Digit) {
  if (params.use_exclusion == 0u) {
    return;
  }
  for (var i = 0u; i < seg.count; i++) {
    let member = member_of(seg.first + i);
    if (member.excl_keep != 0u && (member.excl_key & mask) == prefix) {
      atomicSub(&scratch[bin_word(base, member.excl_key, digit)], member.excl_keep);
    }
  }
}

// The count of a histogram word summed over the segment's parts, for shaders/select_bin_search.wgsl's choose_bin.
fn histogram_count(word: u32) -> u32 {
  var sum = 0u;
  for (var p = 0u; p < params.parts; p++) {
    sum += atomicLoad(&scratch[segment_hists + p * PART_WORDS + word]);
  }
  return sum;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  let reading = params.phase == 0u || params.phase == 2u;
  let parts = select(1u, params.parts, reading);
  if (group >= params.num_segments * parts) {
    return;
  }
  let s = group / parts;
  let seg = segment_of(s);
  let state = s * STATE_WORDS;
  // The segment's first part's histograms; the choosing workgroup's own histogram work (digit 2 from the lists,
  // the exclusions) goes into part 0's.
  let hists = params.num_segments * STATE_WORDS + s * params.parts * PART_WORDS;
  segment_hists = hists;
  let lists = params.num_segments * (STATE_WORDS + params.parts * PART_WORDS) + s * params.parts * params.candidate_capacity;
  if (reading) {
    let part = group % parts;
    let g = part * WORKGROUP_SIZE + lid;
    let threads = parts * WORKGROUP_SIZE;
    let base = hists + part * PART_WORDS;
    let list = lists + part * params.candidate_capacity;
    if (params.phase == 0u) {
      read_rows(g, threads, seg, base, list, 0u, 0u, digit_of(0u), false);
    } else if (atomicLoad(&scratch[state + 1u]) != 0u) {
      // mask = 0: nothing is kept, so there is nothing to narrow.
      read_rows(g, threads, seg, base, list, atomicLoad(&scratch[state]), atomicLoad(&scratch[state + 1u]), digit_of(1u), true);
    }
    return;
  }
  if (params.phase == 1u) {
    let digit = digit_of(0u);
    if (lid == 0u) {
      subtract_exclusions(seg, hists, 0u, 0u, digit);
    }
    workgroupBarrier();
    choose_bin(lid, digit, 0u, true, seg.k);
    if (lid == 0u && chosen.z > 0u) {
      atomicStore(&scratch[state], chosen.x << digit.shift);
      atomicStore(&scratch[state + 1u], (digit.bins - 1u) << digit.shift);
      atomicStore(&scratch[state + 2u], chosen.z - chosen.y);
    }
    return;
  }
  // Phase 3. The state is uniform across the workgroup: it was written by an earlier dispatch.
  var prefix = atomicLoad(&scratch[state]);
  var mask = atomicLoad(&scratch[state + 1u]);
  var remaining = atomicLoad(&scratch[state + 2u]);
  var listed = true;
  for (var p = 0u; p < params.parts; p++) {
    listed = listed && atomicLoad(&scratch[hists + p * PART_WORDS + HIST_WORDS]) <= params.candidate_capacity;
  }
  for (var d = 1u; d < 3u; d++) {
    let digit = digit_of(d);
    if (d == 2u && mask != 0u) {
      if (listed) {
        for (var p = 0u; p < params.parts; p++) {
          let list = lists + p * params.candidate_capacity;
          let count = atomicLoad(&scratch[hists + p * PART_WORDS + HIST_WORDS]);
          for (var j = lid; j < count; j += WORKGROUP_SIZE) {
            let key = atomicLoad(&scratch[list + j]);
            if ((key & mask) == prefix) {
              atomicAdd(&scratch[bin_word(hists, key, digit)], 1u);
            }
          }
        }
      } else {
        // A list overflowed (e.g. a segment of equal scores): this workgroup reads the rows itself.
        read_rows(lid, WORKGROUP_SIZE, seg, hists, lists, prefix, mask, digit, false);
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      subtract_exclusions(seg, hists, prefix, mask, digit);
    }
    workgroupBarrier();
    // remaining > 0 whenever mask != 0 (phase 1 kept something); mask = 0 chooses nothing.
    choose_bin(lid, digit, select(1u, remaining, mask != 0u), false, seg.k);
    if (mask != 0u) {
      prefix |= chosen.x << digit.shift;
      mask |= (digit.bins - 1u) << digit.shift;
      remaining -= chosen.y;
    }
  }
  if (lid == 0u) {
    thresholds[s * 2u] = select(prefix, NO_KEY, mask == 0u);
    thresholds[s * 2u + 1u] = select(remaining, 0u, mask == 0u);
  }
}
