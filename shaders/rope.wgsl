// RoPE in place on q [n][N_HEADS][HEAD_DIM] and k [n][KV_HEADS][HEAD_DIM]: pair (2i, 2i+1) of every head of token
// t is rotated by the angle of (positions[t], i). The cos/sin come from a host-computed table (cos_sin
// [table_rows][HEAD_DIM/2] of vec2(cos, sin)) because WGSL's sin/cos are only specified to 2^-11 absolute error on
// [-π, π] and not at all beyond, while angles reach pos radians; the table reproduces the reference's fp32 angles
// bit for bit. One thread per pair; q pairs first, then k pairs.

@group(0) @binding(0) var<uniform> params: RopeParams;
@group(0) @binding(1) var<storage, read> positions: array<u32>;       // [num_tokens]
@group(0) @binding(2) var<storage, read> cos_sin: array<vec2<f32>>;   // [table_rows][HEAD_DIM / 2]
@group(0) @binding(3) var<storage, read_write> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;

const HALF: u32 = HEAD_DIM / 2u;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = linear_workgroup_index(wid, nwg) * WORKGROUP_SIZE + lid;
  let q_pairs = params.num_tokens * N_HEADS * HALF;
  let k_pairs = params.num_tokens * KV_HEADS * HALF;
  if (i >= q_pairs + k_pairs) {
    return;
  }
  let is_q = i < q_pairs;
  let j = select(i - q_pairs, i, is_q);
  let heads = select(KV_HEADS, N_HEADS, is_q);
  let t = j / (heads * HALF);
  let pair = j % HALF;
  let pos = positions[t];
  // The host sizes the table past every position it sends; a stray position leaves the values untouched.
  if (pos >= params.table_rows) {
    return;
  }
  let cs = cos_sin[pos * HALF + pair];
  if (is_q) {
    let v0 = q[2u * j];
    let v1 = q[2u * j + 1u];
    q[2u * j] = v0 * cs.x - v1 * cs.y;
    q[2u * j + 1u] = v0 * cs.y + v1 * cs.x;
  } else {
    let v0 = k[2u * j];
    let v1 = k[2u * j + 1u];
    k[2u * j] = v0 * cs.x - v1 * cs.y;
    k[2u * j + 1u] = v0 * cs.y + v1 * cs.x;
  }
}
