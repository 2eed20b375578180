// compact_blocks' K item for a workgroup that is one quad (4 invocations, WORKGROUP_SIZE 4, G = 16, head_dim a
// multiple of 8): not a kernel itself; compiled with `enable subgroups;` into shaders/compact_blocks.wgsl where
// the device has the feature (src/kernels/compress/compact-blocks.ts decides; otherwise a stub stands in and
// quantize_k_item runs). The four lanes share one item (token group, K_SPAN channels) and each holds 4 of its 16
// tokens in registers, so every K value is read once, not twice as quantize_k_item reads it (one token loop per
// pass), and no loop carries the ranges. The ranges meet through quad swaps; each lane makes the parameter
// words of one channel quad (quad l % K_QUADS) and the coders are broadcast, so the f16 packing and unpacking is
// done once per quad, not once per lane. Measured on SwiftShader (bench --only quantize): 15–20% less time for
// the whole kernel at 1K. Bit-identical with quantize_k_item (the same param_words, coder and quad_codes).

// This lane's index in its quad (the lanes' roles must match quadBroadcast's numbering); the whole workgroup
// is active here, and it is one quad.
fn quad_lane(lid: u32) -> u32 {
  return subgroupExclusiveAdd(1u) & 3u;
}

fn quad_min(x: vec4<f32>) -> vec4<f32> {
  let a = min(x, quadSwapX(x));
  return min(a, quadSwapY(a));
}

fn quad_max(x: vec4<f32>) -> vec4<f32> {
  let a = max(x, quadSwapX(x));
  return max(a, quadSwapY(a));
}

// Token group `group`, channels c0..c0 + K_SPAN − 1 (two octets for int2, one otherwise); lane l holds tokens
// t0 + 4l … t0 + 4l + 3. Slots past the count read the last filled token (which leaves the ranges as they are)
// and are written 0.
fn quantize_k_quad(base: u32, group: u32, c0: u32, l: u32) {
  let t0 = group * QUANT_GROUP;
  let t1 = min(t0 + QUANT_GROUP, job.count);
  let last = max(t1, t0 + 1u) - 1u;
  let mine = t0 + 4u * l;
  let ta = min(mine, last);
  let tb = min(mine + 1u, last);
  let tc = min(mine + 2u, last);
  let td = min(mine + 3u, last);
  let a0 = row_oct(ta, c0, false);
  let b0 = row_oct(tb, c0, false);
  let c0_ = row_oct(tc, c0, false);
  let d0 = row_oct(td, c0, false);
  let lo0 = quad_min(min(min(a0.lo, b0.lo), min(c0_.lo, d0.lo)));
  let hi0 = quad_max(max(max(a0.lo, b0.lo), max(c0_.lo, d0.lo)));
  let lo1 = quad_min(min(min(a0.hi, b0.hi), min(c0_.hi, d0.hi)));
  let hi1 = quad_max(max(max(a0.hi, b0.hi), max(c0_.hi, d0.hi)));
  var a1 = a0;
  var b1 = b0;
  var c1 = c0_;
  var d1 = d0;
  var lo2 = lo0;
  var hi2 = hi0;
  var lo3 = lo1;
  var hi3 = hi1;
  if (K_QUADS > 2u) {
    a1 = row_oct(ta, c0 + 8u, false);
    b1 = row_oct(tb, c0 + 8u, false);
    c1 = row_oct(tc, c0 + 8u, false);
    d1 = row_oct(td, c0 + 8u, false);
    lo2 = quad_min(min(min(a1.lo, b1.lo), min(c1.lo, d1.lo)));
    hi2 = quad_max(max(max(a1.lo, b1.lo), max(c1.lo, d1.lo)));
    lo3 = quad_min(min(min(a1.hi, b1.hi), min(c1.hi, d1.hi)));
    hi3 = quad_max(max(max(a1.hi, b1.hi), max(c1.hi, d1.hi)));
  }
  // A group without filled tokens keeps parameter words 0 (and its codes are 0).
  let q = l % K_QUADS;
  let lo = select(select(lo0, lo1, q == 1u), select(lo2, lo3, q == 3u), q >= 2u);
  let hi = select(select(hi0, hi1, q == 1u), select(hi2, hi3, q == 3u), q >= 2u);
  let w = select(vec4<u32>(0u), param_words(lo, hi), t1 > t0);
  if (l < K_QUADS) {
    store_k_params(base + QUANT_KP_OFFSET + group * HEAD_DIM + c0 + 4u * q, w);
  }
  let own = coder(scales(w), zeros(w));
  // (quadBroadcast takes a constant lane; with K_QUADS 2, k2 and k3 are unused.)
  let k0 = Coder(quadBroadcast(own.scale, 0u), quadBroadcast(own.zero, 0u));
  let k1 = Coder(quadBroadcast(own.scale, 1u), quadBroadcast(own.zero, 1u));
  let k2 = Coder(quadBroadcast(own.scale, 2u % K_QUADS), quadBroadcast(own.zero, 2u % K_QUADS));
  let k3 = Coder(quadBroadcast(own.scale, 3u % K_QUADS), quadBroadcast(own.zero, 3u % K_QUADS));
  let at = base + c0 / VALUES_PER_WORD + mine * WORDS_PER_TOKEN;
  let n = t1 - min(t1, mine);
  quad_token_words(at, a0, a1, k0, k1, k2, k3, n > 0u);
  quad_token_words(at + WORDS_PER_TOKEN, b0, b1, k0, k1, k2, k3, n > 1u);
  quad_token_words(at + 2u * WORDS_PER_TOKEN, c0_, c1, k0, k1, k2, k3, n > 2u);
  quad_token_words(at + 3u * WORDS_PER_TOKEN, d0, d1, k0, k1, k2, k3, n > 3u);
}

// The K_WORDS code words of one token of a quad item (0 where the slot is unfilled).
fn quad_token_words(at: u32, a: Octet, b: Octet, k0: Coder, k1: Coder, k2: Coder, k3: Coder, filled: bool) {
  let c = select(0u, quad_codes(a.lo, k0), filled);
  let d = select(0u, quad_codes(a.hi, k1), filled);
  if (K_WORDS == 2u) {
    quant_pool[at] = c;
    quant_pool[at + 1u] = d;
  } else if (K_QUADS == 2u) {
    quant_pool[at] = c | (d << ((4u * QUANT_BITS) % 32u));
  } else {
    quant_pool[at] = select(0u, c | (d << ((4u * QUANT_BITS) % 32u)) |
      (quad_codes(b.lo, k2) << ((8u * QUANT_BITS) % 32u)) | (quad_codes(b.hi, k3) << ((12u * QUANT_BITS) % 32u)), filled);
  }
}
