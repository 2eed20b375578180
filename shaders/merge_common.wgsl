// Helpers of the merge kernels (not a kernel itself): a token's channels four at a time, and the fixed SimHash of a
// key that MergeMode 'nearest' finds its candidates with (keyHash in src/compress/merge.ts is the same arithmetic,
// in the same f32 order). The including kernel declares `block_table`, `full_pool`, `quant_pool` and `params` with
// `max_blocks`, and includes shaders/kv_read.wgsl.

// Channels 4q .. 4q + 3 of token `slot` of the block that `entry` names (zeros past HEAD_DIM). f16 blocks are read
// two channels per word; SwiftShader pays per load and per index computation, not per byte.
fn kv_quad(entry: u32, slot: u32, q: u32, v_part: bool) -> vec4<f32> {
  if (FULL_F16 && HEAD_DIM % 4u == 0u && !(HAS_QUANT && kv_is_quant(entry))) {
    let w = kv_block(entry) * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part) + (slot * HEAD_DIM + 4u * q) / 2u;
    return vec4<f32>(unpack2x16float(full_pool[w]), unpack2x16float(full_pool[w + 1u]));
  }
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * q + c;
    if (d < HEAD_DIM) {
      v[c] = kv_value(entry, slot, d, v_part);
    }
  }
  return v;
}

fn token_entry_of(row: u32, t: u32) -> u32 {
  return block_table[row * params.max_blocks + t / BLOCK_SIZE];
}

// Which of channels 4i .. 4i + 3 the hash negates: the top 4 bits of a fixed integer mix of i (seed MERGE_HASH_SEED).
fn hash_flips(i: u32) -> vec4<bool> {
  var x = (i ^ MERGE_HASH_SEED) * 0x9e3779b1u;
  x ^= x >> 16u;
  x *= 0x85ebca6bu;
  x ^= x >> 13u;
  let n = x >> 28u;
  return vec4<bool>((n & 1u) != 0u, (n & 2u) != 0u, (n & 4u) != 0u, (n & 8u) != 0u);
}

// 32-bit SimHash of a key: bit g is the sign of its projection on row g of H₃₂·F (F: the fixed sign flips above,
// channel d summed into group d mod 32 first; H₃₂: the 32-point Walsh–Hadamard matrix), 32 orthogonal dense ±1
// directions at the cost of one pass over the key and 80 additions. Adds and subtractions only, in a fixed order,
// so the reference reproduces every bit.
fn key_hash(key: ptr<function, array<vec4<f32>, HEAD_VECS>>) -> u32 {
  var u: array<vec4<f32>, 8>;
  for (var i = 0u; i < HEAD_VECS; i++) {
    let k = (*key)[i];
    u[i % 8u] = u[i % 8u] + select(k, -k, hash_flips(i));
  }
  // Butterflies h = 1, 2 inside each vec4, then h = 4, 8, 16 between vec4s.
  for (var m = 0u; m < 8u; m++) {
    let a = u[m];
    let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);
    u[m] = vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);
  }
  for (var h = 1u; h < 8u; h *= 2u) {
    for (var m = 0u; m < 8u; m++) {
      if ((m & h) == 0u) {
        let a = u[m];
        let b = u[m + h];
        u[m] = a + b;
        u[m + h] = a - b;
      }
    }
  }
  var bits = 0u;
  for (var m = 0u; m < 8u; m++) {
    let positive = u[m] > vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c++) {
      if (positive[c]) {
        bits |= 1u << (4u * m + c);
      }
    }
  }
  return bits;
}
