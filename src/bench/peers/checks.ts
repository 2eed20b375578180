// The peers page's numerical checks: every implementation's SnapKV scores and KIVI codes against the plain-TS
// reference's, read into one comparable form first. Runs in the page (browser-safe).
import type { BlockLayout } from '../../format/layout.js';
import { unpack2x16float } from '../../format/f16.js';
import { PEERS_SHAPE as S, type PeerCheck } from './contract.js';
import type { GpuJsQuantOutput } from './gpujs.js';

// ---- comparable outputs ---------------------------------------------------------------------------------------

/** KIVI output in one form for all three: f16 parameters as numbers, one code per value. */
export interface QuantResult {
  /** [kvHeads·n/G][headDim] */
  readonly kScale: Float32Array;
  readonly kZero: Float32Array;
  /** [kvHeads·n][headDim/G] */
  readonly vScale: Float32Array;
  readonly vZero: Float32Array;
  /** [kvHeads·n][headDim] */
  readonly kCodes: Uint8Array;
  readonly vCodes: Uint8Array;
}

function emptyQuant(n: number): QuantResult {
  const tokens = S.kvHeads * n;
  return {
    kScale: new Float32Array((tokens / S.group) * S.headDim),
    kZero: new Float32Array((tokens / S.group) * S.headDim),
    vScale: new Float32Array(tokens * (S.headDim / S.group)),
    vZero: new Float32Array(tokens * (S.headDim / S.group)),
    kCodes: new Uint8Array(tokens * S.headDim),
    vCodes: new Uint8Array(tokens * S.headDim),
  };
}

/** Reads the blocks of every (kv head, block) from their words (reference encodeBlock or the GPU's quant pool). */
export function quantFromBlocks(layout: BlockLayout, n: number, blockWords: (kv: number, b: number) => Uint32Array): QuantResult {
  const out = emptyQuant(n);
  const { headDim: D, blockSize: B, groupSize: G, bits } = layout;
  const mask = (1 << bits) - 1;
  const code = (words: Uint32Array, base: number, i: number) =>
    ((words[base + Math.floor((i * bits) / 32)] ?? 0) >>> (i * bits) % 32) & mask;
  for (let kv = 0; kv < S.kvHeads; kv++) {
    for (let b = 0; b < n / B; b++) {
      const words = blockWords(kv, b);
      const t0 = kv * n + b * B;
      for (let gi = 0; gi < B / G; gi++) {
        for (let d = 0; d < D; d++) {
          const [s, z] = unpack2x16float(words[layout.kParamsOffset + gi * D + d] ?? 0);
          out.kScale[(t0 / G + gi) * D + d] = s;
          out.kZero[(t0 / G + gi) * D + d] = z;
        }
      }
      for (let t = 0; t < B; t++) {
        for (let g = 0; g < D / G; g++) {
          const [s, z] = unpack2x16float(words[layout.vParamsOffset + t * (D / G) + g] ?? 0);
          out.vScale[(t0 + t) * (D / G) + g] = s;
          out.vZero[(t0 + t) * (D / G) + g] = z;
        }
        for (let d = 0; d < D; d++) {
          out.kCodes[(t0 + t) * D + d] = code(words, layout.kOffset, t * D + d);
          out.vCodes[(t0 + t) * D + d] = code(words, layout.vOffset, t * D + d);
        }
      }
    }
  }
  return out;
}

/** Reads gpu.js's flat outputs: parameters as [scales, zeros], codes packed 16 bits' worth per float. */
export function quantFromGpuJs(out: GpuJsQuantOutput, n: number): QuantResult {
  const result = emptyQuant(n);
  const perFloat = 16 / S.bits;
  const mask = (1 << S.bits) - 1;
  const copyParams = (params: Float32Array, scale: Float32Array, zero: Float32Array) => {
    scale.set(params.subarray(0, scale.length));
    zero.set(params.subarray(scale.length, scale.length + zero.length));
  };
  copyParams(out.kParams, result.kScale, result.kZero);
  copyParams(out.vParams, result.vScale, result.vZero);
  const unpack = (words: Float32Array, codes: Uint8Array) => {
    for (let w = 0; w < codes.length / perFloat; w++) {
      const packed = Math.round(words[w] ?? 0);
      for (let p = 0; p < perFloat; p++) codes[w * perFloat + p] = (packed >> (S.bits * p)) & mask;
    }
  };
  unpack(out.kCodes, result.kCodes);
  unpack(out.vCodes, result.vCodes);
  return result;
}

// ---- checks ---------------------------------------------------------------------------------------------------

/** gpu.js writes ±Infinity as ±FLT_MAX. */
const PROTECTED = 3e38;
const SCORE_TOLERANCE = 1e-4;
const PARAM_MISMATCH_LIMIT = 1e-3;
const CODE_MISMATCH_LIMIT = 1e-3;

/**
 * SnapKV scores against the reference: protected tokens (+Infinity; gpu.js's ±FLT_MAX) must match exactly, the
 * others within SCORE_TOLERANCE of the largest reference score.
 */
export function checkScores(
  context: number,
  impl: PeerCheck['impl'],
  got: (kv: number, t: number) => number,
  ref: readonly Float32Array[],
): PeerCheck {
  let protectedMismatches = 0;
  let maxAbs = 0;
  let maxRef = 0;
  for (let kv = 0; kv < S.kvHeads; kv++) {
    const r = ref[kv] ?? new Float32Array(0);
    for (let t = 0; t < r.length; t++) {
      const x = got(kv, t);
      const want = r[t] ?? 0;
      if ((want === Infinity) !== x >= PROTECTED) {
        protectedMismatches++;
      } else if (want !== Infinity) {
        maxAbs = Math.max(maxAbs, Math.abs(x - want));
        maxRef = Math.max(maxRef, Math.abs(want));
      }
    }
  }
  const maxRelError = maxRef > 0 ? maxAbs / maxRef : maxAbs;
  return {
    op: 'snapkv-score',
    context,
    impl,
    pass: protectedMismatches === 0 && maxRelError <= SCORE_TOLERANCE && Number.isFinite(maxRelError),
    metrics: { maxAbsError: maxAbs, maxRelError, protectedMismatches },
    tolerance: `protected tokens identical; max |Δ| ≤ ${SCORE_TOLERANCE} × max reference score`,
  };
}

function f16Close(a: number, b: number): boolean {
  return Math.abs(a - b) <= 2 ** -10 * Math.max(Math.abs(a), Math.abs(b)) + 2 ** -24;
}

/** KIVI output against the reference: f16 parameters within 1 ulp, codes within ±1, few of either differing. */
export function checkQuant(context: number, impl: PeerCheck['impl'], got: QuantResult, ref: QuantResult): PeerCheck {
  let params = 0;
  let paramMismatches = 0;
  let paramsOffByMoreThanUlp = 0;
  for (const key of ['kScale', 'kZero', 'vScale', 'vZero'] as const) {
    const a = got[key];
    const b = ref[key];
    params += b.length;
    for (let i = 0; i < b.length; i++) {
      const x = a[i] ?? NaN;
      const y = b[i] ?? NaN;
      if (x !== y) paramMismatches++;
      if (!f16Close(x, y)) paramsOffByMoreThanUlp++;
    }
  }
  let codes = 0;
  let codeMismatches = 0;
  let maxCodeDiff = 0;
  for (const key of ['kCodes', 'vCodes'] as const) {
    const a = got[key];
    const b = ref[key];
    codes += b.length;
    for (let i = 0; i < b.length; i++) {
      const diff = Math.abs((a[i] ?? 255) - (b[i] ?? 0));
      if (diff !== 0) codeMismatches++;
      maxCodeDiff = Math.max(maxCodeDiff, diff);
    }
  }
  const paramMismatchFraction = paramMismatches / params;
  const codeMismatchFraction = codeMismatches / codes;
  return {
    op: 'kivi-quantize',
    context,
    impl,
    pass:
      paramsOffByMoreThanUlp === 0 &&
      paramMismatchFraction <= PARAM_MISMATCH_LIMIT &&
      maxCodeDiff <= 1 &&
      codeMismatchFraction <= CODE_MISMATCH_LIMIT,
    metrics: { paramMismatchFraction, paramsOffByMoreThanUlp, maxCodeDiff, codeMismatchFraction },
    tolerance:
      `f16 scale/zero within 1 ulp, ≤ ${PARAM_MISMATCH_LIMIT * 100}% not bit-equal; codes within ±1, ` +
      `≤ ${CODE_MISMATCH_LIMIT * 100}% differing`,
  };
}
