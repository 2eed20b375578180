// Radix select of a top-k threshold: one workgroup per SEGMENT, a segment being one row (per-row top-k) or the
// union of several rows (joint budgets: a layer's heads, or every head). Scores are mapped to order-preserving
// u32 keys and the k-th largest key is found digit by digit from the top with a workgroup histogram, so the
// result is exact (no float comparisons, no sorting) and ties are resolved afterwards by index:
//   thresholds[seg] = {key T, keepEqual}: keep every key > T and the first keepEqual keys == T.
// k larger than the segment is clamped to its size (T = smallest key, keepEqual = how many equal it); k = 0
// gives T = 0xffffffff, keepEqual = 0 (no finite or infinite score maps to that key; NaN is not a valid score).
//
// Full reads of the rows are what this costs, so it makes as few as it can. A segment of at least wide_from
// tokens takes three digits of 11, 11 and 10 bits; a shorter one four of 8 bits (there, summing 2048 bins per
// digit costs more than the keys). One later full read only COLLECTS the candidates (keys under the prefix so
// far) into a scratch list, and every later histogram is taken from that list: the second digit's read with
// 11-bit digits, with 8-bit ones the first read after the prefix holds at most a quarter of the segment (the
// first 8 bits of a float are its sign and 7 exponent bits: half a row of similar scores can share them). A
// thread that finds more candidates than its share of the list (candidate_capacity; e.g. a row of equal scores)
// reads its share of the rows again instead: slower, same result. So a long row is read twice, not three or
// four times. With params.compact the same workgroup then writes the kept indices (compact_member), counting
// each thread's kept keys from its candidates, so that costs one more read, not two.
//
// What a software adapter (SwiftShader) pays for, and what the layout avoids: every byte of workgroup memory in
// every workgroup (the histograms live in a storage scratch, zeroed by a buffer clear); every barrier (it
// switches every group of lanes: each digit has its own histogram, so no barrier separates one digit's readers
// from the next digit's writers, and the host picks 4 threads there, one lane group); an atomic's code for every
// token whether taken or not (the collecting read does no histogram). Choosing the bin sums blocks of 16 bins in
// parallel, then one thread walks the block sums and one block.
//
// Exclusions (adakv): member m may exclude its own top tokens, given as a threshold {key, keepEqual} from an
// earlier run of this kernel. Those tokens are its highest-ranked ones, so they are all keys > key plus keepEqual
// keys == key; the histogram counts keys ≤ key and subtracts keepEqual from key's bin, which is the exact
// histogram of the remaining tokens without knowing WHICH equal tokens were excluded (the candidate list holds
// keys ≤ key too, so the same subtraction applies to it).
//
// Per-member counts of a joint selection are shaders/select_member_counts.wgsl's, one workgroup per member.

@group(0) @binding(0) var<uniform> params: SelectParams;
@group(0) @binding(1) var<storage, read> scores: array<u32>;         // f32 bits [row][stride]
@group(0) @binding(2) var<storage, read> lengths: array<u32>;        // [row] (per-row mode)
@group(0) @binding(3) var<storage, read> ks: array<u32>;             // per-row: k [row]; segmented: [seg][3] {first member, members, k}
@group(0) @binding(4) var<storage, read> members: array<u32>;        // segmented: [m][2] {row, length}
@group(0) @binding(5) var<storage, read> exclusions: array<u32>;     // [m][2] {key, keepEqual} when use_exclusion
@group(0) @binding(6) var<storage, read_write> thresholds: array<u32>;            // [seg][2] {key, keepEqual}
// [seg][HIST_WORDS] histograms, zeroed by the host (a buffer clear costs less than the workgroups' own stores),
// then [seg][candidate_capacity][WORKGROUP_SIZE] candidate keys (thread lid's j-th at j·WORKGROUP_SIZE + lid).
// In storage, not workgroup memory: a software adapter pays for every byte of workgroup memory in every
// workgroup, touched or not (8 KiB of bins cost more than the whole 1K-token select on SwiftShader).
@group(0) @binding(7) var<storage, read_write> scratch: array<atomic<u32>>;
// When params.compact is set (segments of one member each): the member's kept logical indices, ascending, at
// [row][stride], and their count at [row], as shaders/select_compact.wgsl writes them.
@group(0) @binding(8) var<storage, read_write> kept: array<u32>;
@group(0) @binding(9) var<storage, read_write> kept_counts: array<u32>;

// Histogram words per segment: 2048 + 2048 + 1024 bins (wide digits) or 4 × 256.
const HIST_WORDS: u32 = 5120u;
const NO_KEY: u32 = 0xffffffffu;

// Where this workgroup's histogram starts in `scratch`.
var<private> hist_base: u32;
// This thread's keys above its candidates (collect_candidates).
var<private> above_candidates: u32;

// The tokens a thread reads of a member: from x, every STEP-th, below y. A software adapter reads one
// contiguous run per thread (CONTIGUOUS_RUNS; STEP 1), so that the fused compaction can take a run's kept counts
// from the run's candidates (measured on SwiftShader against every WORKGROUP_SIZE-th token: the same time at 4K
// and 16K, 0.9x at 1K with the saved read); hardware keeps neighbouring threads on neighbouring tokens (STEP =
// WORKGROUP_SIZE: coalesced loads) and the compaction counts by reading.
const STEP: u32 = select(WORKGROUP_SIZE, 1u, CONTIGUOUS_RUNS != 0u);
fn run_of(lid: u32, len: u32) -> vec2<u32> {
  if (STEP != 1u) {
    return vec2<u32>(lid, len);
  }
  return contiguous_run(lid, len);
}

// One contiguous run per thread (the fused compaction's order).
fn contiguous_run(lid: u32, len: u32) -> vec2<u32> {
  let span = (len + WORKGROUP_SIZE - 1u) / WORKGROUP_SIZE;
  let start = min(lid * span, len);
  return vec2<u32>(start, min(start + span, len));
}
var<workgroup> segment_tokens: u32;
// Each thread's (keys > T, keys == T) over its own run of tokens, for the fused compaction.
var<workgroup> run_counts: array<vec2<u32>, WORKGROUP_SIZE>;

// Long segments: three digits of 11, 11 and 10 bits. Short ones (under wide_from tokens): four of 8 bits, where
// clearing and summing 2048 bins per digit would cost more than the keys.
fn digit_of(d: u32, wide: bool) -> Digit {
  if (!wide) {
    return Digit(24u - 8u * d, 256u, 256u * d);
  }
  if (d == 0u) {
    return Digit(21u, 2048u, 0u);
  }
  if (d == 1u) {
    return Digit(10u, 2048u, 2048u);
  }
  return Digit(0u, 1024u, 4096u);
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

// The histogram word of the key's digit.
fn bin_of(key: u32, digit: Digit) -> u32 {
  return hist_base + digit.offset + ((key >> digit.shift) & (digit.bins - 1u));
}

fn count_key(key: u32, prefix: u32, mask: u32, digit: Digit) {
  if ((key & mask) == prefix) {
    atomicAdd(&scratch[bin_of(key, digit)], 1u);
  }
}

// Takes a member's excluded keys == its exclusion key back out of the histogram (they were counted as ≤ key).
fn subtract_exclusion(member: Member, prefix: u32, mask: u32, digit: Digit) {
  if (member.excl_keep != 0u && (member.excl_key & mask) == prefix) {
    atomicSub(&scratch[bin_of(member.excl_key, digit)], member.excl_keep);
  }
}

// Histogram of the digit over the segment's (non-excluded) keys under `prefix`, reading the rows.
fn histogram_rows(lid: u32, seg: Segment, prefix: u32, mask: u32, digit: Digit) {
  for (var i = 0u; i < seg.count; i++) {
    let member = member_of(seg.first + i);
    let base = member.row * params.stride;
    let run = run_of(lid, member.len);
    // Four tokens per iteration: a software adapter pays per loop iteration (the lane mask, the exit test) about
    // as much as per key.
    var t = run.x;
    for (; t + 3u * STEP < run.y; t += 4u * STEP) {
      let k0 = order_key(scores[base + t]);
      let k1 = order_key(scores[base + t + STEP]);
      let k2 = order_key(scores[base + t + 2u * STEP]);
      let k3 = order_key(scores[base + t + 3u * STEP]);
      if (k0 <= member.excl_key) { count_key(k0, prefix, mask, digit); }
      if (k1 <= member.excl_key) { count_key(k1, prefix, mask, digit); }
      if (k2 <= member.excl_key) { count_key(k2, prefix, mask, digit); }
      if (k3 <= member.excl_key) { count_key(k3, prefix, mask, digit); }
    }
    for (; t < run.y; t += STEP) {
      let key = order_key(scores[base + t]);
      if (key <= member.excl_key) {
        count_key(key, prefix, mask, digit);
      }
    }
    if (lid == 0u) {
      subtract_exclusion(member, prefix, mask, digit);
    }
  }
}

// Appends this thread's keys under `prefix` (non-excluded) to its candidate list; returns how many it found
// (stored or not). No histogram here: a software adapter runs an atomic's code for every token, taken or not, so
// the histogram is taken from the list afterwards.
fn collect_candidates(lid: u32, seg: Segment, prefix: u32, mask: u32, list: u32) -> u32 {
  var found = 0u;
  // Keys above every candidate (their digits above the prefix), for the fused compaction's counts.
  let top = prefix | ~mask;
  var above = vec4<u32>(0u);
  for (var i = 0u; i < seg.count; i++) {
    let member = member_of(seg.first + i);
    let base = member.row * params.stride;
    let run = run_of(lid, member.len);
    // Four tokens per iteration, as in histogram_rows.
    var t = run.x;
    for (; t + 3u * STEP < run.y; t += 4u * STEP) {
      let keys = vec4<u32>(
        order_key(scores[base + t]),
        order_key(scores[base + t + STEP]),
        order_key(scores[base + t + 2u * STEP]),
        order_key(scores[base + t + 3u * STEP]),
      );
      let kept_in = keys <= vec4<u32>(member.excl_key);
      above += select(vec4<u32>(0u), vec4<u32>(1u), kept_in & (keys > vec4<u32>(top)));
      let hit = kept_in & ((keys & vec4<u32>(mask)) == vec4<u32>(prefix));
      if (any(hit)) {
        for (var j = 0u; j < 4u; j++) {
          if (hit[j]) {
            found = collect(keys[j], found, list);
          }
        }
      }
    }
    for (; t < run.y; t += STEP) {
      let key = order_key(scores[base + t]);
      if (key <= member.excl_key) {
        above.x += select(0u, 1u, key > top);
        if ((key & mask) == prefix) {
          found = collect(key, found, list);
        }
      }
    }
  }
  above_candidates = dot(above, vec4<u32>(1u));
  return found;
}

fn collect(key: u32, found: u32, list: u32) -> u32 {
  if (found < params.candidate_capacity) {
    atomicStore(&scratch[list + found * WORKGROUP_SIZE], key);
  }
  return found + 1u;
}

// The same histogram from this thread's `count` candidates (keys already filtered by the exclusions).
fn histogram_candidates(lid: u32, seg: Segment, prefix: u32, mask: u32, digit: Digit, list: u32, count: u32) {
  for (var j = 0u; j < count; j++) {
    count_key(atomicLoad(&scratch[list + j * WORKGROUP_SIZE]), prefix, mask, digit);
  }
  if (lid == 0u && params.use_exclusion != 0u) {
    for (var i = 0u; i < seg.count; i++) {
      subtract_exclusion(member_of(seg.first + i), prefix, mask, digit);
    }
  }
}

// The count of a histogram word of this workgroup's segment, for shaders/select_bin_search.wgsl's choose_bin.
fn histogram_count(word: u32) -> u32 {
  return atomicLoad(&scratch[hist_base + word]);
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
  hist_base = group * HIST_WORDS;
  let list = params.num_segments * HIST_WORDS + group * params.candidate_capacity * WORKGROUP_SIZE + lid;
  var prefix = 0u;
  var mask = 0u;
  var remaining = 0u;
  // This thread's candidates; a thread whose list overflowed reads its share of the rows instead.
  var found = 0u;
  var from_candidates = false;
  if (lid == 0u) {
    var tokens = 0u;
    for (var i = 0u; i < seg.count; i++) {
      tokens += member_of(seg.first + i).len;
    }
    segment_tokens = tokens;
  }
  // Uniform, as the digit loop holds barriers.
  let tokens = workgroupUniformLoad(&segment_tokens);
  let wide = tokens >= params.wide_from;
  let digits = select(4u, 3u, wide);
  // Keys under the prefix so far (the chosen bin's count).
  var under = 0u;
  var collected = false;
  for (var d = 0u; d < digits; d++) {
    let digit = digit_of(d, wide);
    // Collect once, before a digit that has another after it, and only once the prefix has narrowed the keys to
    // a quarter of the segment (or at the last chance): 8-bit digits over floats often leave half a row under
    // the first prefix (sign and 7 exponent bits), and storing half the keys costs more than reading them again.
    // Collecting is pointless when nothing is kept (mask = 0: every key would be a candidate).
    if (!collected && d >= 1u && d + 1u < digits && mask != 0u && params.candidate_capacity != 0u &&
        (d + 2u == digits || under * 4u <= tokens)) {
      found = collect_candidates(lid, seg, prefix, mask, list);
      from_candidates = found <= params.candidate_capacity;
      collected = true;
    }
    if (from_candidates) {
      histogram_candidates(lid, seg, prefix, mask, digit, list, found);
    } else {
      histogram_rows(lid, seg, prefix, mask, digit);
    }
    workgroupBarrier();
    // Exactly one bin holds the remaining-th largest key when 0 < remaining ≤ the count under the prefix.
    choose_bin(lid, digit, remaining, d == 0u, seg.k);
    remaining = chosen.z;
    let bin = chosen.x;
    let above = chosen.y;
    under = chosen.w;
    if (remaining > 0u) {
      prefix |= bin << digit.shift;
      mask |= (digit.bins - 1u) << digit.shift;
      remaining -= above;
    }
    // No barrier before the next digit: its histogram is another, and the choice it overwrites is written
    // only after the next digit's histogram barrier, which every thread reaches after reading this one.
  }
  // After the last digit `remaining` is how many keys equal to the threshold are kept; mask stays 0 only when
  // nothing is kept (k = 0 or an empty segment).
  let key = select(prefix, NO_KEY, mask == 0u);
  let keep_equal = select(remaining, 0u, mask == 0u);
  if (lid == 0u) {
    thresholds[group * 2u] = key;
    thresholds[group * 2u + 1u] = keep_equal;
  }
  if (params.compact != 0u) {
    compact_member(lid, member_of(seg.first), key, keep_equal, list, found, from_candidates);
  }
}

// The compaction of select_compact.wgsl, fused: the workgroup that found the threshold writes the kept indices,
// saving a dispatch and its chunked scan (three barriers per chunk there, one here). Each thread owns one
// contiguous run of the row, counts its kept keys, takes the earlier runs' counts and writes its own.
fn compact_member(lid: u32, member: Member, key: u32, keep_equal: u32, list: u32, found: u32, from_candidates: bool) {
  let base = member.row * params.stride;
  let run = contiguous_run(lid, member.len);
  let start = run.x;
  let end = run.y;
  var own = vec2<u32>(0u, 0u);
  if (from_candidates && STEP == 1u) {
    // Keys > T are the keys above the candidates plus candidates > T; keys == T are all candidates.
    own.x = above_candidates;
    for (var j = 0u; j < found; j++) {
      let k = atomicLoad(&scratch[list + j * WORKGROUP_SIZE]);
      own += vec2<u32>(select(0u, 1u, k > key), select(0u, 1u, k == key));
    }
  } else {
    var t = start;
    for (; t + 3u < end; t += 4u) {
      let keys = vec4<u32>(
        order_key(scores[base + t]),
        order_key(scores[base + t + 1u]),
        order_key(scores[base + t + 2u]),
        order_key(scores[base + t + 3u]),
      );
      own += vec2<u32>(dot(select(vec4<u32>(0u), vec4<u32>(1u), keys > vec4<u32>(key)), vec4<u32>(1u)),
                       dot(select(vec4<u32>(0u), vec4<u32>(1u), keys == vec4<u32>(key)), vec4<u32>(1u)));
    }
    for (; t < end; t++) {
      let k = order_key(scores[base + t]);
      own += vec2<u32>(select(0u, 1u, k > key), select(0u, 1u, k == key));
    }
  }
  run_counts[lid] = own;
  workgroupBarrier();
  var before = vec2<u32>(0u, 0u);
  for (var w = 0u; w < lid; w++) {
    before += run_counts[w];
  }
  if (lid == WORKGROUP_SIZE - 1u) {
    let total = before + own;
    kept_counts[member.row] = total.x + min(total.y, keep_equal);
  }
  // Only runs holding a kept key have anything to write.
  if (own.x == 0u && (own.y == 0u || before.y >= keep_equal)) {
    return;
  }
  for (var t = start; t < end; t++) {
    let k = order_key(scores[base + t]);
    if (k > key) {
      kept[base + before.x + min(before.y, keep_equal)] = t;
      before.x += 1u;
    } else if (k == key) {
      if (before.y < keep_equal) {
        kept[base + before.x + before.y] = t;
      }
      before.y += 1u;
    }
  }
}
