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

// One butterfly stage between two groups of the hash (h ≥ 4).
fn bfly(a: ptr<function, vec4<f32>>, b: ptr<function, vec4<f32>>) {
  let x = *a;
  let y = *b;
  *a = x + y;
  *b = x - y;
}

// 32-bit SimHash of the key of token `slot` of the block `entry` names: bit g is the sign of its projection on row
// g of H₃₂·F (F: the fixed sign flips above, channel d summed into group d mod 32 first; H₃₂: the 32-point
// Walsh–Hadamard matrix), 32 orthogonal dense ±1 directions at the cost of one pass over the key and 80 additions.
// Adds and subtractions only, in a fixed order, so the reference reproduces every bit. The eight groups are named
// registers, not an array: SwiftShader keeps a dynamically indexed private array in memory (a load or store per
// lane each access), and the key is read straight into them.
fn key_hash(entry: u32, slot: u32) -> u32 {
  var u0 = vec4<f32>(0.0);
  var u1 = u0;
  var u2 = u0;
  var u3 = u0;
  var u4 = u0;
  var u5 = u0;
  var u6 = u0;
  var u7 = u0;
  for (var i = 0u; i < HEAD_VECS; i += 8u) {
    u0 += hash_term(entry, slot, i);
    u1 += hash_term(entry, slot, i + 1u);
    u2 += hash_term(entry, slot, i + 2u);
    u3 += hash_term(entry, slot, i + 3u);
    u4 += hash_term(entry, slot, i + 4u);
    u5 += hash_term(entry, slot, i + 5u);
    u6 += hash_term(entry, slot, i + 6u);
    u7 += hash_term(entry, slot, i + 7u);
  }
  // Butterflies h = 1, 2 inside each vec4, then h = 4, 8, 16 between vec4s (groups m and m + h/4).
  u0 = hadamard4(u0);
  u1 = hadamard4(u1);
  u2 = hadamard4(u2);
  u3 = hadamard4(u3);
  u4 = hadamard4(u4);
  u5 = hadamard4(u5);
  u6 = hadamard4(u6);
  u7 = hadamard4(u7);
  bfly(&u0, &u1);
  bfly(&u2, &u3);
  bfly(&u4, &u5);
  bfly(&u6, &u7);
  bfly(&u0, &u2);
  bfly(&u1, &u3);
  bfly(&u4, &u6);
  bfly(&u5, &u7);
  bfly(&u0, &u4);
  bfly(&u1, &u5);
  bfly(&u2, &u6);
  bfly(&u3, &u7);
  let one = vec4<u32>(1u, 2u, 4u, 8u);
  let zero = vec4<f32>(0.0);
  let b0 = select(vec4<u32>(0u), one, u0 > zero) | select(vec4<u32>(0u), one << vec4<u32>(4u), u1 > zero);
  let b1 = select(vec4<u32>(0u), one << vec4<u32>(8u), u2 > zero) | select(vec4<u32>(0u), one << vec4<u32>(12u), u3 > zero);
  let b2 = select(vec4<u32>(0u), one << vec4<u32>(16u), u4 > zero) | select(vec4<u32>(0u), one << vec4<u32>(20u), u5 > zero);
  let b3 = select(vec4<u32>(0u), one << vec4<u32>(24u), u6 > zero) | select(vec4<u32>(0u), one << vec4<u32>(28u), u7 > zero);
  let b = b0 | b1 | b2 | b3;
  return b.x | b.y | b.z | b.w;
}

// Channels 4i .. 4i + 3 of the key with the hash's sign flips (zeros past HEAD_VECS).
fn hash_term(entry: u32, slot: u32, i: u32) -> vec4<f32> {
  if (i >= HEAD_VECS) {
    return vec4<f32>(0.0);
  }
  let k = kv_quad(entry, slot, i, false);
  return select(k, -k, hash_flips(i));
}

// The butterflies h = 1, 2 of the Walsh–Hadamard transform inside one vec4.
fn hadamard4(a: vec4<f32>) -> vec4<f32> {
  let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);
  return vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);
}
