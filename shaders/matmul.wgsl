// out[r][o] (+)= Σ_i x[r][i] · w[o][i]: x [rows][in_dim] times the transpose of a row-major weight [out_dim][in_dim]
// as llama2.c stores it. Classic shared-memory tiling: a workgroup owns a TILE_M × TILE_N block of outputs, walks
// in_dim in steps of TILE_K staging both operand tiles (k-major, so the inner loop reads consecutive words across
// threads and never conflicts on banks), and each thread accumulates THREAD_M × THREAD_N outputs in registers.
// Threads own strided rows/columns (ty + i·THREADS_M, tx + j·THREADS_N) so stores are coalesced too.
// Tiles are zero-padded past rows / in_dim / out_dim, so any size (in = 172, rows = 1) is correct.
// With ACCUMULATE the result is added to what `out` holds: the residual connection, fused to save a pass.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows][in_dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [out_dim][in_dim]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [rows][out_dim]

const THREADS_M: u32 = TILE_M / THREAD_M;
const THREADS_N: u32 = TILE_N / THREAD_N;
const WORKGROUP_SIZE: u32 = THREADS_M * THREADS_N;

var<workgroup> x_tile: array<f32, TILE_K * TILE_M>;  // [k][m]
var<workgroup> w_tile: array<f32, TILE_K * TILE_N>;  // [k][n]

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let group = linear_workgroup_index(wid, nwg);
  let col_tiles = (params.out_dim + TILE_N - 1u) / TILE_N;
  let row_tiles = (params.rows + TILE_M - 1u) / TILE_M;
  if (group >= row_tiles * col_tiles) {
    return;
  }
  let row0 = (group / col_tiles) * TILE_M;
  let col0 = (group % col_tiles) * TILE_N;
  let tx = lid % THREADS_N;
  let ty = lid / THREADS_N;

  var acc: array<f32, THREAD_M * THREAD_N>;
  for (var k0 = 0u; k0 < params.in_dim; k0 += TILE_K) {
    // Consecutive threads load consecutive k of one row: 4·TILE_K-byte runs of global memory.
    for (var e = lid; e < TILE_M * TILE_K; e += WORKGROUP_SIZE) {
      let m = e / TILE_K;
      let k = e % TILE_K;
      var v = 0.0;
      if (row0 + m < params.rows && k0 + k < params.in_dim) {
        v = x[(row0 + m) * params.in_dim + k0 + k];
      }
      x_tile[k * TILE_M + m] = v;
    }
    for (var e = lid; e < TILE_N * TILE_K; e += WORKGROUP_SIZE) {
      let n = e / TILE_K;
      let k = e % TILE_K;
      var v = 0.0;
      if (col0 + n < params.out_dim && k0 + k < params.in_dim) {
        v = w[(col0 + n) * params.in_dim + k0 + k];
      }
      w_tile[k * TILE_N + n] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < TILE_K; k++) {
      var xr: array<f32, THREAD_M>;
      for (var i = 0u; i < THREAD_M; i++) {
        xr[i] = x_tile[k * TILE_M + ty + i * THREADS_M];
      }
      for (var j = 0u; j < THREAD_N; j++) {
        let wv = w_tile[k * TILE_N + tx + j * THREADS_N];
        for (var i = 0u; i < THREAD_M; i++) {
          acc[i * THREAD_N + j] += xr[i] * wv;
        }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < THREAD_M; i++) {
    let r = row0 + ty + i * THREADS_M;
    if (r >= params.rows) {
      continue;
    }
    for (var j = 0u; j < THREAD_N; j++) {
      let c = col0 + tx + j * THREADS_N;
      if (c < params.out_dim) {
        let o = r * params.out_dim + c;
        if (ACCUMULATE) {
          out[o] = out[o] + acc[i * THREAD_N + j];
        } else {
          out[o] = acc[i * THREAD_N + j];
        }
      }
    }
  }
}
