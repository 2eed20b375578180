/**
 * Plain-TS attention over per-KV-head key/value lists, the reference for the decode and prefill kernels and
 * their CPU fallback. KV heads may hold different numbers of tokens (per-head eviction), so keys and values
 * come as one array per KV head. Grouped-query attention: query head h reads KV head ⌊h / (nHeads/kvHeads)⌋.
 *
 * Sums run in f64 and results are stored as f32; GPU kernels (f32, online softmax) match within a relative
 * tolerance of about 1e-5 on outputs and 1e-6 absolute on probabilities.
 */
import { InvalidArgumentError } from '../errors.js';

/**
 * Inputs of {@link decodeAttention}: one query vector per query head against each KV head's cached tokens.
 *
 * @example
 * ```ts
 * decodeAttention({ q, keys: [k0], values: [v0], nHeads: 2, kvHeads: 1, headDim: 8 });
 * ```
 */
export interface DecodeAttentionInput {
  /** `[nHeads][headDim]`. */
  readonly q: Float32Array;
  /** Per KV head: `[tokens][headDim]` (RoPE already applied). */
  readonly keys: readonly Float32Array[];
  /** Per KV head: `[tokens][headDim]`, same token count as `keys`. */
  readonly values: readonly Float32Array[];
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Logit scale; default 1/√headDim. */
  readonly scale?: number;
}

/**
 * Result of an attention reference.
 *
 * @example
 * ```ts
 * const { out, probsPerKvHead } = decodeAttention(input); probsPerKvHead[0][t]; // Σ over the group's heads
 * ```
 */
export interface AttentionResult {
  /** Decode: `[nHeads][headDim]`. Prefill: `[queries][nHeads][headDim]`. Zero rows where a query saw no key. */
  readonly out: Float32Array;
  /**
   * Per KV head, per token: softmax probability summed over the query heads of its group (and, for prefill,
   * over all queries of the chunk). This is what the cache accumulates into `attnSum` (and squared per
   * query head into `attnSqSum`).
   */
  readonly probsPerKvHead: Float32Array[];
  /**
   * Per KV head, per token: Σ over query heads of the group (and queries) of the squared probability — the
   * increment of Cloudflare KV-Compress's metric.
   */
  readonly sqProbsPerKvHead: Float32Array[];
}

/**
 * Inputs of {@link prefillAttention}: a chunk of queries with positions against keys with positions.
 *
 * @example
 * ```ts
 * prefillAttention({ ...decodeInput, queryPositions: new Uint32Array([7]), keyPositions: [pos0] });
 * ```
 */
export interface PrefillAttentionInput extends DecodeAttentionInput {
  /** `[queries][nHeads][headDim]`. */
  readonly q: Float32Array;
  /** Position of each query, `[queries]`. */
  readonly queryPositions: Uint32Array;
  /** Per KV head: position of each cached token. A key is visible to a query iff keyPos ≤ queryPos. */
  readonly keyPositions: readonly Uint32Array[];
  /** Also return per-query probabilities (`probsPerQuery`). */
  readonly returnProbs?: boolean;
}

/**
 * Result of {@link prefillAttention}.
 *
 * @example
 * ```ts
 * const { visibleCount, probsPerQuery } = prefillAttention({ ...input, returnProbs: true });
 * ```
 */
export interface PrefillAttentionResult extends AttentionResult {
  /** Per KV head, per token: how many queries of the chunk could see the token (increment of `attnCount`). */
  readonly visibleCount: Uint32Array[];
  /**
   * With `returnProbs`: per KV head, `[queries][tokens]`, probabilities summed over the query heads of the
   * group (0 for keys the query cannot see).
   */
  readonly probsPerQuery?: Float32Array[];
}

function checkShapes(input: DecodeAttentionInput, queries: number): number[] {
  const { nHeads, kvHeads, headDim } = input;
  for (const [field, value] of [
    ['nHeads', nHeads],
    ['kvHeads', kvHeads],
    ['headDim', headDim],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
    }
  }
  if (nHeads % kvHeads !== 0) {
    throw new InvalidArgumentError('kvHeads', `must divide nHeads ${nHeads}; got ${kvHeads}`);
  }
  if (input.q.length !== queries * nHeads * headDim) {
    throw new InvalidArgumentError('q', `expected ${queries * nHeads * headDim} values; got ${input.q.length}`);
  }
  if (input.keys.length !== kvHeads || input.values.length !== kvHeads) {
    throw new InvalidArgumentError('keys', `expected one key and one value array per KV head (${kvHeads})`);
  }
  const tokens: number[] = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const kl = input.keys[kv]?.length ?? 0;
    if (kl % headDim !== 0 || (input.values[kv]?.length ?? 0) !== kl) {
      throw new InvalidArgumentError(`keys[${kv}]`, `keys and values must both be [tokens][${headDim}]`);
    }
    tokens.push(kl / headDim);
  }
  if (input.scale !== undefined && !Number.isFinite(input.scale)) {
    throw new InvalidArgumentError('scale', `must be finite; got ${input.scale}`);
  }
  return tokens;
}

/**
 * Core: one query vector of head h against kv head `kv`, keys restricted to `visible`. Writes the output row
 * and returns the probabilities (f64) in `probs` (entries of invisible keys are 0).
 */
function attendOne(
  q: Float32Array,
  qOffset: number,
  keys: Float32Array,
  values: Float32Array,
  tokens: number,
  headDim: number,
  scale: number,
  visible: (t: number) => boolean,
  probs: Float64Array,
  out: Float32Array,
  outOffset: number,
): void {
  let max = -Infinity;
  for (let t = 0; t < tokens; t++) {
    if (!visible(t)) {
      probs[t] = -Infinity;
      continue;
    }
    let dot = 0;
    for (let c = 0; c < headDim; c++) dot += (q[qOffset + c] ?? 0) * (keys[t * headDim + c] ?? 0);
    const logit = dot * scale;
    probs[t] = logit;
    if (logit > max) max = logit;
  }
  if (max === -Infinity) {
    probs.fill(0, 0, tokens);
    return; // saw nothing: output row stays 0
  }
  // Subtracting the max keeps exp() ≤ 1: no overflow for large logits.
  let sum = 0;
  for (let t = 0; t < tokens; t++) {
    const p = (probs[t] ?? -Infinity) === -Infinity ? 0 : Math.exp((probs[t] ?? 0) - max);
    probs[t] = p;
    sum += p;
  }
  const acc = new Float64Array(headDim);
  for (let t = 0; t < tokens; t++) {
    const p = (probs[t] ?? 0) / sum;
    probs[t] = p;
    if (p === 0) continue;
    for (let c = 0; c < headDim; c++) acc[c] = (acc[c] ?? 0) + p * (values[t * headDim + c] ?? 0);
  }
  for (let c = 0; c < headDim; c++) out[outOffset + c] = acc[c] ?? 0;
}

/**
 * Single-token (decode) attention with GQA. Every cached token is visible.
 *
 * @example
 * ```ts
 * const { out, probsPerKvHead } = decodeAttention({ q, keys: [k0, k1], values: [v0, v1], nHeads: 4, kvHeads: 2, headDim: 8 });
 * // probsPerKvHead[kv] sums to nHeads / kvHeads (one softmax per query head of the group)
 * ```
 */
export function decodeAttention(input: DecodeAttentionInput): AttentionResult {
  const tokens = checkShapes(input, 1);
  const { nHeads, kvHeads, headDim } = input;
  const scale = input.scale ?? 1 / Math.sqrt(headDim);
  const group = nHeads / kvHeads;
  const out = new Float32Array(nHeads * headDim);
  const probsPerKvHead: Float32Array[] = [];
  const sqProbsPerKvHead: Float32Array[] = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const n = tokens[kv] ?? 0;
    const keys = input.keys[kv] ?? new Float32Array(0);
    const values = input.values[kv] ?? new Float32Array(0);
    const sum = new Float64Array(n);
    const sq = new Float64Array(n);
    const probs = new Float64Array(n);
    for (let h = kv * group; h < (kv + 1) * group; h++) {
      attendOne(input.q, h * headDim, keys, values, n, headDim, scale, () => true, probs, out, h * headDim);
      for (let t = 0; t < n; t++) {
        const p = probs[t] ?? 0;
        sum[t] = (sum[t] ?? 0) + p;
        sq[t] = (sq[t] ?? 0) + p * p;
      }
    }
    probsPerKvHead.push(Float32Array.from(sum));
    sqProbsPerKvHead.push(Float32Array.from(sq));
  }
  return { out, probsPerKvHead, sqProbsPerKvHead };
}

/**
 * Causal attention of a chunk of queries (with positions) against keys (with positions), GQA. A key is visible
 * iff keyPos ≤ queryPos, so the chunk's own keys may be included in `keys`.
 *
 * @example
 * ```ts
 * const r = prefillAttention({
 *   q, queryPositions: new Uint32Array([5, 6]), keys, values, keyPositions, nHeads: 4, kvHeads: 2, headDim: 8,
 *   returnProbs: true,
 * });
 * r.out; // [2][4][8]
 * ```
 */
export function prefillAttention(input: PrefillAttentionInput): PrefillAttentionResult {
  const { nHeads, kvHeads, headDim, queryPositions } = input;
  const queries = queryPositions.length;
  const tokens = checkShapes(input, queries);
  if (input.keyPositions.length !== kvHeads) {
    throw new InvalidArgumentError('keyPositions', `expected one array per KV head (${kvHeads})`);
  }
  for (let kv = 0; kv < kvHeads; kv++) {
    if ((input.keyPositions[kv]?.length ?? 0) !== tokens[kv]) {
      throw new InvalidArgumentError(`keyPositions[${kv}]`, `expected ${tokens[kv]} positions (one per key)`);
    }
  }
  const scale = input.scale ?? 1 / Math.sqrt(headDim);
  const group = nHeads / kvHeads;
  const out = new Float32Array(queries * nHeads * headDim);
  const probsPerKvHead: Float32Array[] = [];
  const sqProbsPerKvHead: Float32Array[] = [];
  const visibleCount: Uint32Array[] = [];
  const probsPerQuery: Float32Array[] = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const n = tokens[kv] ?? 0;
    const keys = input.keys[kv] ?? new Float32Array(0);
    const values = input.values[kv] ?? new Float32Array(0);
    const kpos = input.keyPositions[kv] ?? new Uint32Array(0);
    const sum = new Float64Array(n);
    const sq = new Float64Array(n);
    const count = new Uint32Array(n);
    const perQuery = input.returnProbs ? new Float32Array(queries * n) : undefined;
    const probs = new Float64Array(n);
    for (let i = 0; i < queries; i++) {
      const qpos = queryPositions[i] ?? 0;
      const visible = (t: number): boolean => (kpos[t] ?? 0) <= qpos;
      for (let t = 0; t < n; t++) if (visible(t)) count[t] = (count[t] ?? 0) + 1;
      for (let h = kv * group; h < (kv + 1) * group; h++) {
        const row = (i * nHeads + h) * headDim;
        attendOne(input.q, row, keys, values, n, headDim, scale, visible, probs, out, row);
        for (let t = 0; t < n; t++) {
          const p = probs[t] ?? 0;
          sum[t] = (sum[t] ?? 0) + p;
          sq[t] = (sq[t] ?? 0) + p * p;
          if (perQuery) perQuery[i * n + t] = (perQuery[i * n + t] ?? 0) + p;
        }
      }
    }
    probsPerKvHead.push(Float32Array.from(sum));
    sqProbsPerKvHead.push(Float32Array.from(sq));
    visibleCount.push(count);
    if (perQuery) probsPerQuery.push(perQuery);
  }
  return input.returnProbs
    ? { out, probsPerKvHead, sqProbsPerKvHead, visibleCount, probsPerQuery }
    : { out, probsPerKvHead, sqProbsPerKvHead, visibleCount };
}
