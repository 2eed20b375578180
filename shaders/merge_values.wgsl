// Merges the evicted tokens of each compacted head into its kept tokens' values (src/compress/merge.ts is the
// reference, MergeMode in src/compress/options.ts the rule): one workgroup per head. Phase 1, over tokens: each
// evicted token's target kept slot (nearest: the kept key of largest cosine similarity; cam: the first kept slot
// after it) into `targets`. Phase 2, one thread per channel, tokens in order (the reference's order, so the
// float sums match it): the merged values into `merged`, which compact_blocks reads in place of the kept
// tokens' values. Keys and positions are never touched. Each thread owns its channels of every slot: no atomics.

@group(0) @binding(0) var<uniform> params: MergeValuesParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, out_base
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
@group(0) @binding(7) var<storage, read_write> targets: array<u32>; // [row][stride] scratch
@group(0) @binding(8) var<storage, read_write> merged: array<f32>;  // [out_base + slot][HEAD_DIM], then [slot] weights

const KEPT: u32 = 0xffffffffu;

fn token_value(row: u32, t: u32, d: u32, v_part: bool) -> f32 {
  return kv_value(block_table[row * params.max_blocks + t / BLOCK_SIZE], t % BLOCK_SIZE, d, v_part);
}

fn weight(row: u32, t: u32) -> f32 {
  return max(mass[row * params.stride + t], 0.0) + MERGE_WEIGHT_FLOOR;
}

// First kept slot whose index is ≥ t (the kept count when none is).
fn lower_bound(base: u32, kept: u32, t: u32) -> u32 {
  var lo = 0u;
  var hi = kept;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (kept_index[base + mid] < t) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo;
}

fn nearest_kept(row: u32, base: u32, kept: u32, t: u32) -> u32 {
  var norm = 0.0;
  for (var d = 0u; d < HEAD_DIM; d++) {
    let x = token_value(row, t, d, false);
    norm += x * x;
  }
  var best = 0u;
  var best_score = -3.0e38f;
  for (var s = 0u; s < kept; s++) {
    let j = kept_index[base + s];
    var dot = 0.0;
    var kept_norm = 0.0;
    for (var d = 0u; d < HEAD_DIM; d++) {
      let kj = token_value(row, j, d, false);
      dot += token_value(row, t, d, false) * kj;
      kept_norm += kj * kj;
    }
    let denominator = sqrt(norm * kept_norm);
    var score = 0.0;
    if (denominator > 0.0) {
      score = dot / denominator;
    }
    if (score > best_score) {
      best_score = score;
      best = s;
    }
  }
  return best;
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
  for (var t = lid; t < tokens; t += WORKGROUP_SIZE) {
    let s = lower_bound(base, kept, t);
    if (s < kept && kept_index[base + s] == t) {
      targets[base + t] = KEPT;
    } else if (params.mode == MERGE_CAM) {
      targets[base + t] = s;
    } else {
      targets[base + t] = nearest_kept(row, base, kept, t);
    }
  }
  storageBarrier();
  workgroupBarrier();
  let weights = params.weights_offset + out;
  for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
    for (var s = 0u; s < kept; s++) {
      let j = kept_index[base + s];
      var v = token_value(row, j, d, true);
      if (params.mode == MERGE_NEAREST) {
        let w = weight(row, j);
        v *= w;
        if (d == 0u) {
          merged[weights + s] = w;
        }
      }
      merged[(out + s) * HEAD_DIM + d] = v;
    }
    for (var t = 0u; t < tokens; t++) {
      let dest = targets[base + t];
      if (dest == KEPT || dest >= kept) {
        continue;
      }
      let v = token_value(row, t, d, true);
      if (params.mode == MERGE_NEAREST) {
        let w = weight(row, t);
        merged[(out + dest) * HEAD_DIM + d] += w * v;
        if (d == 0u) {
          merged[weights + dest] += w;
        }
      } else {
        let span = min(CAM_MERGE_SPAN, kept - dest);
        var dest_mass = 0.0;
        for (var s = dest; s < dest + span; s++) {
          dest_mass += weight(row, kept_index[base + s]);
        }
        let share = min(1.0, weight(row, t) * f32(span) / dest_mass) / f32(span);
        for (var s = dest; s < dest + span; s++) {
          merged[(out + s) * HEAD_DIM + d] += share * v;
        }
      }
    }
  }
  storageBarrier();
  workgroupBarrier();
  if (params.mode == MERGE_NEAREST) {
    for (var i = lid; i < kept * HEAD_DIM; i += WORKGROUP_SIZE) {
      merged[out * HEAD_DIM + i] /= merged[weights + i / HEAD_DIM];
    }
  }
}
