// MergeMode 'slots' (src/compress/options.ts; reference src/compress/merge-slots.ts, absorbIntoSlots): the evicted
// tokens of each head (those not in its kept indices), in logical order, absorbed into its M = SLOTS slots: a token
// fills the first empty slot, else joins the slot of most cosine-similar key (earliest on ties); the slot's key and
// value become mass-weighted means (post-RoPE keys, as cached: see the reference for why), its mass accumulates and
// its position is the earliest absorbed. The slot state persists in `state` between runs, so a later compression
// folds in with the right weight. One workgroup per head, one thread per channel (strided); tokens in order (the
// rule is recurrent), the per-slot dot products reduced in workgroup memory.
// With LOAD_SLOTS (the compaction path, src/compress/gpu-slots.ts) the state is per-compaction scratch holding
// only each head's slot count: the kernel first loads the head's slots from the cache (its first `count` logical
// tokens: keys, values, positions as stored) and their masses from `slot_masses` [row][SLOT_CAPACITY], and
// writes the masses after absorbing back there.

@group(0) @binding(0) var<uniform> params: MergeSlotsParams;
@group(0) @binding(1) var<storage, read> heads: array<u32>;         // [num_heads][4]: row, tokens, kept, state head
@group(0) @binding(2) var<storage, read> kept_index: array<u32>;    // [row][stride] ascending logical indices
@group(0) @binding(3) var<storage, read> mass: array<f32>;          // [row][stride] attention mass per token
@group(0) @binding(4) var<storage, read> block_table: array<u32>;   // [row][max_blocks]
@group(0) @binding(5) var<storage, read> full_pool: array<u32>;
@group(0) @binding(6) var<storage, read> quant_pool: array<u32>;
// [state head][SLOT_STATE_WORDS]: keys [SLOTS][HEAD_DIM], values [SLOTS][HEAD_DIM], mass [SLOTS], positions
// [SLOTS] (u32 bits), count (u32 bits).
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<storage, read_write> slot_masses: array<f32>;  // [row][SLOT_CAPACITY] (LOAD_SLOTS)

const PARTS: u32 = 2u * SLOTS + 1u;

var<workgroup> partial: array<f32, WORKGROUP_SIZE * PARTS>;
var<workgroup> slot_mass: array<f32, SLOTS>;
var<workgroup> slot_pos: array<u32, SLOTS>;
var<workgroup> uniform_tokens: u32;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let head = linear_workgroup_index(wid, nwg);
  if (head >= params.num_heads) {
    return;
  }
  let row = heads[4u * head];
  let kept = heads[4u * head + 2u];
  let sbase = heads[4u * head + 3u] * SLOT_STATE_WORDS;
  let vbase = sbase + SLOTS * HEAD_DIM;
  let mbase = sbase + 2u * SLOTS * HEAD_DIM;
  let base = row * params.stride;
  var count = bitcast<u32>(state[mbase + 2u * SLOTS]);
  if (LOAD_SLOTS) {
    // Each thread loads the channels it later reads; thread 0 the masses and positions it later reads.
    for (var c = 0u; c < count; c++) {
      let entry = block_table[row * params.max_blocks + c / BLOCK_SIZE];
      for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
        state[sbase + c * HEAD_DIM + d] = kv_value(entry, c % BLOCK_SIZE, d, false);
        state[vbase + c * HEAD_DIM + d] = kv_value(entry, c % BLOCK_SIZE, d, true);
      }
      if (lid == 0u) {
        state[mbase + c] = slot_masses[row * SLOT_CAPACITY + c];
        state[mbase + SLOTS + c] = bitcast<f32>(kv_position(entry, c % BLOCK_SIZE));
      }
    }
  }
  if (lid == 0u) {
    uniform_tokens = heads[4u * head + 1u];
    for (var c = 0u; c < SLOTS; c++) {
      slot_mass[c] = state[mbase + c];
      slot_pos[c] = bitcast<u32>(state[mbase + SLOTS + c]);
    }
  }
  let tokens = workgroupUniformLoad(&uniform_tokens);
  var next = 0u;
  for (var t = 0u; t < tokens; t++) {
    var evicted = true;
    if (next < kept && kept_index[base + next] == t) {
      evicted = false;
      next++;
    }
    let entry = block_table[row * params.max_blocks + t / BLOCK_SIZE];
    // Partial dot products with every slot and both norms over this thread's channels (zeros for a kept token).
    for (var p = 0u; p < PARTS; p++) {
      partial[p * WORKGROUP_SIZE + lid] = 0.0;
    }
    if (evicted && count >= SLOTS) {
      for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
        let k = kv_value(entry, t % BLOCK_SIZE, d, false);
        partial[(2u * SLOTS) * WORKGROUP_SIZE + lid] += k * k;
        for (var c = 0u; c < SLOTS; c++) {
          let sk = state[sbase + c * HEAD_DIM + d];
          partial[c * WORKGROUP_SIZE + lid] += k * sk;
          partial[(SLOTS + c) * WORKGROUP_SIZE + lid] += sk * sk;
        }
      }
    }
    for (var half = WORKGROUP_SIZE / 2u; half > 0u; half /= 2u) {
      workgroupBarrier();
      if (lid < half) {
        for (var p = 0u; p < PARTS; p++) {
          partial[p * WORKGROUP_SIZE + lid] += partial[p * WORKGROUP_SIZE + lid + half];
        }
      }
    }
    workgroupBarrier();
    var s = count;
    var before = 0.0;
    var total = 0.0;
    if (evicted) {
      if (count < SLOTS) {
        count++;
      } else {
        var best = -3.0e38f;
        let token_norm = partial[(2u * SLOTS) * WORKGROUP_SIZE];
        for (var c = 0u; c < SLOTS; c++) {
          let denominator = sqrt(token_norm * partial[(SLOTS + c) * WORKGROUP_SIZE]);
          var score = 0.0;
          if (denominator > 0.0) {
            score = partial[c * WORKGROUP_SIZE] / denominator;
          }
          if (score > best) {
            best = score;
            s = c;
          }
        }
      }
      let w = max(mass[base + t], 0.0) + MERGE_WEIGHT_FLOOR;
      before = slot_mass[s];
      total = before + w;
      for (var d = lid; d < HEAD_DIM; d += WORKGROUP_SIZE) {
        let ki = sbase + s * HEAD_DIM + d;
        let vi = vbase + s * HEAD_DIM + d;
        state[ki] = (state[ki] * before + w * kv_value(entry, t % BLOCK_SIZE, d, false)) / total;
        state[vi] = (state[vi] * before + w * kv_value(entry, t % BLOCK_SIZE, d, true)) / total;
      }
    }
    // Every thread has read the slot masses and the reduced partials before thread 0 changes them.
    workgroupBarrier();
    if (evicted && lid == 0u) {
      let pos = kv_position(entry, t % BLOCK_SIZE);
      if (before == 0.0) {
        slot_pos[s] = pos;
      } else {
        slot_pos[s] = min(slot_pos[s], pos);
      }
      slot_mass[s] = total;
    }
  }
  if (lid == 0u) {
    for (var c = 0u; c < SLOTS; c++) {
      state[mbase + c] = slot_mass[c];
      state[mbase + SLOTS + c] = bitcast<f32>(slot_pos[c]);
    }
    state[mbase + 2u * SLOTS] = bitcast<f32>(count);
    if (LOAD_SLOTS) {
      for (var c = 0u; c < count; c++) {
        slot_masses[row * SLOT_CAPACITY + c] = slot_mass[c];
      }
    }
  }
}
