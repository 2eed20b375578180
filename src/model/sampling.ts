import { InvalidArgumentError } from '../errors.js';
import { mulberry32 } from '../random.js';

/**
 * Index of the largest logit (the first one on ties), as llama2.c `sample_argmax`.
 *
 * @example
 * ```ts
 * argmax(Float32Array.of(0.1, 2, 2)); // 1
 * ```
 */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i] as number;
    if (v > bestVal) {
      bestVal = v;
      best = i;
    }
  }
  return best;
}

/**
 * Probabilities softmax(logits / temperature) as a new array (computed in double, stored f64).
 *
 * @example
 * ```ts
 * softmaxWithTemperature(Float32Array.of(1, 2, 3), 0.8); // sums to 1
 * ```
 */
export function softmaxWithTemperature(logits: ArrayLike<number>, temperature = 1): Float64Array {
  if (!(temperature > 0) || !Number.isFinite(temperature)) {
    throw new InvalidArgumentError('temperature', `must be a finite number > 0, got ${temperature} (use argmax for 0)`);
  }
  const p = new Float64Array(logits.length);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, (logits[i] as number) / temperature);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp((logits[i] as number) / temperature - max);
    p[i] = e;
    sum += e;
  }
  for (let i = 0; i < p.length; i++) p[i] = (p[i] as number) / sum;
  return p;
}

/**
 * log(sum(exp(logits))), stable.
 *
 * @example
 * ```ts
 * const nll = logSumExp(logits) - logits[target];
 * ```
 */
export function logSumExp(logits: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i] as number);
  if (!Number.isFinite(max)) return max;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp((logits[i] as number) - max);
  return max + Math.log(sum);
}

/**
 * Samples an index from probabilities: plain multinomial when topP ≥ 1 (llama2.c `sample_mult`), else from the
 * smallest set of most-likely tokens whose mass exceeds topP (llama2.c `sample_topp`, including its cutoff of
 * (1 − topP)/(n − 1) that drops hopeless candidates before sorting).
 *
 * @example
 * ```ts
 * const id = sampleTopP(softmaxWithTemperature(logits, 0.9), 0.9, mulberry32(1));
 * ```
 */
export function sampleTopP(probs: ArrayLike<number>, topP: number, rng: () => number): number {
  const n = probs.length;
  if (n === 0) throw new InvalidArgumentError('probs', 'is empty');
  if (!(topP > 0)) throw new InvalidArgumentError('topP', `must be > 0, got ${topP}`);
  const coin = rng();
  if (topP >= 1 || n === 1) {
    let cdf = 0;
    for (let i = 0; i < n; i++) {
      cdf += probs[i] as number;
      if (coin < cdf) return i;
    }
    return n - 1;
  }
  const cutoff = (1 - topP) / (n - 1);
  const cand: number[] = [];
  for (let i = 0; i < n; i++) if ((probs[i] as number) >= cutoff) cand.push(i);
  cand.sort((a, b) => (probs[b] as number) - (probs[a] as number) || a - b);
  let cum = 0;
  let last = cand.length - 1;
  for (let i = 0; i < cand.length; i++) {
    cum += probs[cand[i] as number] as number;
    if (cum > topP) {
      last = i;
      break;
    }
  }
  const r = coin * cum;
  let cdf = 0;
  for (let i = 0; i <= last; i++) {
    const id = cand[i] as number;
    cdf += probs[id] as number;
    if (r < cdf) return id;
  }
  return cand[last] ?? 0;
}

/**
 * Options of {@link createSampler}.
 *
 * @example
 * ```ts
 * createSampler({ temperature: 0.8, topP: 0.9, seed: 1 });
 * ```
 */
export interface SamplerOptions {
  /** 0 means greedy (argmax). Default 1. */
  readonly temperature?: number;
  /** Nucleus mass in (0, 1]; 1 disables top-p. Default 0.9 (llama2.c's default). */
  readonly topP?: number;
  /** PRNG seed. Default 42. */
  readonly seed?: number;
}

/**
 * A seeded sampler from logits to a token id: argmax at temperature 0, else top-p over softmax(logits / T).
 *
 * @example
 * ```ts
 * const sample = createSampler({ temperature: 0.8, topP: 0.9, seed: 7 });
 * const next = sample(model.forward(token, pos));
 * ```
 */
export function createSampler(options: SamplerOptions = {}): (logits: ArrayLike<number>) => number {
  const temperature = options.temperature ?? 1;
  const topP = options.topP ?? 0.9;
  const rng = mulberry32(options.seed ?? 42);
  if (temperature < 0 || !Number.isFinite(temperature)) {
    throw new InvalidArgumentError('temperature', `must be a finite number ≥ 0, got ${temperature}`);
  }
  if (!(topP > 0 && topP <= 1)) throw new InvalidArgumentError('topP', `must be in (0, 1], got ${topP}`);
  return (logits) => (temperature === 0 ? argmax(logits) : sampleTopP(softmaxWithTemperature(logits, temperature), topP, rng));
}

/**
 * KL(P ‖ Q) in nats between the distributions softmax(p/T) and softmax(q/T) of two logit vectors, e.g. the
 * reference model's (P) and a compressed-cache run's (Q). Zero iff the distributions agree.
 *
 * @example
 * ```ts
 * klDivergence(referenceLogits, compressedLogits); // ≈ 0.003
 * ```
 */
export function klDivergence(pLogits: ArrayLike<number>, qLogits: ArrayLike<number>, temperature = 1): number {
  if (pLogits.length !== qLogits.length) {
    throw new InvalidArgumentError('qLogits', `length ${qLogits.length} differs from pLogits length ${pLogits.length}`);
  }
  const lp = logSoftmax(pLogits, temperature);
  const lq = logSoftmax(qLogits, temperature);
  let kl = 0;
  for (let i = 0; i < lp.length; i++) {
    const a = lp[i] as number;
    if (a === -Infinity) continue;
    kl += Math.exp(a) * (a - (lq[i] as number));
  }
  return Math.max(0, kl);
}

function logSoftmax(logits: ArrayLike<number>, temperature: number): Float64Array {
  const scaled = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) scaled[i] = (logits[i] as number) / temperature;
  const lse = logSumExp(scaled);
  for (let i = 0; i < scaled.length; i++) scaled[i] = (scaled[i] as number) - lse;
  return scaled;
}
