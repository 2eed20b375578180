// Helpers of the merge kernels (not a kernel itself): a token's channels four at a time, and the fixed SimHash of a
// key that MergeMode 'nearest' finds its candidates with (keyHash in src/compress/merge.ts is the same arithmetic,
// in the same f32 order). The including kernel declares `block_table`, `full_pool`, `full_pool8`, `quant_pool` and `params` with
// `max_blocks`, and includes shaders/kv_read.wgsl.

// Whether a token's block is a quantized one. FULL_SOURCES (no merged head has a quantized block) compiles the
// quantized reads out: SwiftShader pays for them even when no lane takes them (int4 caches merged 1.5-2x slower).
fn source_quant(entry: u32) -> bool {
  return HAS_QUANT && !FULL_SOURCES && kv_is_quant(entry);
}

// Channels 4q .. 4q + 3 of token `slot` of the block that `entry` names (zeros past HEAD_DIM). f16 blocks are read
// two channels per word; SwiftShader pays per load and per index computation, not per byte.
fn kv_quad(entry: u32, slot: u32, q: u32, v_part: bool) -> vec4<f32> {
  if (FULL_F16 && HEAD_DIM % 4u == 0u && !source_quant(entry)) {
    let w = kv_block(entry) * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part) + (slot * HEAD_DIM + 4u * q) / 2u;
    return vec4<f32>(unpack2x16float(full_pool[w]), unpack2x16float(full_pool[w + 1u]));
  }
  var v = vec4<f32>(0.0);
  for (var c = 0u; c < 4u; c++) {
    let d = 4u * q + c;
    if (d < HEAD_DIM) {
      if (FULL_SOURCES) {
        v[c] = full_value(kv_block(entry), slot, d, v_part);
      } else {
        v[c] = kv_value(entry, slot, d, v_part);
      }
    }
  }
  return v;
}

// Whether an f16 token row is whole vec4<u32>s of `full_pool8` (the including kernel binds the full pool again as
// array<vec4<u32>>): then eight channels are one load. SwiftShader pays per load instruction and lane, not per byte.
const FULL_OCTETS: bool = FULL_F16 && HEAD_DIM % 8u == 0u && FULL_WORDS_PER_BLOCK % 4u == 0u && FULL_V_OFFSET % 4u == 0u;

// Octets per head row (the last one part zeros when HEAD_DIM is not a multiple of 8).
const HEAD_OCTETS: u32 = (HEAD_VECS + 1u) / 2u;

// Channels 8o .. 8o + 7 of token `slot` of the block that `entry` names (zeros past HEAD_DIM).
fn kv_octet(entry: u32, slot: u32, o: u32, v_part: bool) -> Octet {
  if (FULL_OCTETS && !source_quant(entry)) {
    let w = kv_block(entry) * FULL_WORDS_PER_BLOCK + select(0u, FULL_V_OFFSET, v_part) + (slot * HEAD_DIM + 8u * o) / 2u;
    let x = full_pool8[w / 4u];
    return Octet(vec4<f32>(unpack2x16float(x.x), unpack2x16float(x.y)), vec4<f32>(unpack2x16float(x.z), unpack2x16float(x.w)));
  }
  if (QUANT_OCTETS && source_quant(entry)) {
    return quant_octet(kv_block(entry), slot, o, v_part);
  }
  var hi = vec4<f32>(0.0);
  if (2u * o + 1u < HEAD_VECS) {
    hi = kv_quad(entry, slot, 2u * o + 1u, v_part);
  }
  return Octet(kv_quad(entry, slot, 2u * o, v_part), hi);
}

// Whether quant_octet reads a quantized token's eight channels with shared loads: 4-bit codes (eight are one
// word) and value groups of 8 or more channels (one scale/zero word); otherwise kv_octet reads them per channel.
const QUANT_OCTETS: bool = HAS_QUANT && HEAD_DIM % 8u == 0u && QUANT_BITS == 4u && QUANT_GROUP % 8u == 0u;

// Scale (x) and zero (y) of four key channels from their four scale/zero words at `at`.
fn key_params4(at: u32) -> mat2x4<f32> {
  let a = unpack2x16float(quant_pool[at]);
  let b = unpack2x16float(quant_pool[at + 1u]);
  let c = unpack2x16float(quant_pool[at + 2u]);
  let d = unpack2x16float(quant_pool[at + 3u]);
  return mat2x4<f32>(vec4<f32>(a.x, b.x, c.x, d.x), vec4<f32>(a.y, b.y, c.y, d.y));
}

// quant_value (shaders/kv_read.wgsl) for channels 8o .. 8o + 7 under QUANT_OCTETS, its arithmetic with the loads
// shared: one code word, and one scale/zero word for a value's eight channels (eight for a key's, whose
// parameters are per channel): 2 or 9 loads instead of 16. Written out, no loops: SwiftShader keeps a vector
// indexed by a loop variable in memory.
fn quant_octet(block: u32, slot: u32, o: u32, v_part: bool) -> Octet {
  let base = block * QUANT_WORDS_PER_BLOCK;
  let d0 = 8u * o;
  let w = vec4<u32>(quant_pool[base + select(0u, QUANT_V_OFFSET, v_part) + (slot * HEAD_DIM + d0) / 8u]);
  let lo = vec4<f32>((w >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
  let hi = vec4<f32>((w >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
  if (v_part) {
    let p = unpack2x16float(quant_pool[base + QUANT_VP_OFFSET + slot * (HEAD_DIM / QUANT_GROUP) + d0 / QUANT_GROUP]);
    return Octet(lo * p.x + p.y, hi * p.x + p.y);
  }
  let at = base + QUANT_KP_OFFSET + (slot / QUANT_GROUP) * HEAD_DIM + d0;
  let p0 = key_params4(at);
  let p1 = key_params4(at + 4u);
  return Octet(lo * p0[0] + p0[1], hi * p1[0] + p1[1]);
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
    let k0 = hash_terms(entry, slot, i);
    let k1 = hash_terms(entry, slot, i + 2u);
    let k2 = hash_terms(entry, slot, i + 4u);
    let k3 = hash_terms(entry, slot, i + 6u);
    u0 += k0.lo;
    u1 += k0.hi;
    u2 += k1.lo;
    u3 += k1.hi;
    u4 += k2.lo;
    u5 += k2.hi;
    u6 += k3.lo;
    u7 += k3.hi;
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

// Channels 4i .. 4i + 7 of the key (i even) with the hash's sign flips (zeros past HEAD_VECS).
fn hash_terms(entry: u32, slot: u32, i: u32) -> Octet {
  if (i >= HEAD_VECS) {
    return Octet(vec4<f32>(0.0), vec4<f32>(0.0));
  }
  let k = kv_octet(entry, slot, i / 2u, false);
  return Octet(select(k.lo, -k.lo, hash_flips(i)), select(k.hi, -k.hi, hash_flips(i + 1u)));
}

// The butterflies h = 1, 2 of the Walsh–Hadamard transform inside one vec4.
fn hadamard4(a: vec4<f32>) -> vec4<f32> {
  let b = vec4<f32>(a.x + a.y, a.x - a.y, a.z + a.w, a.z - a.w);
  return vec4<f32>(b.x + b.z, b.y + b.w, b.x - b.z, b.y - b.w);
}
