/**
 * The metrics of kvcompact's quality figures, in one place: negative log-likelihood and perplexity of the next
 * token, top-1 accuracy, and against a reference (the full cache) argmax agreement and KL(P_ref ‖ P). `evaluate`
 * (src/eval/evaluate.ts) and the Generator's full-cache comparison (src/app/generator.ts) both use them. Sums are
 * in double, in the order predictions arrive.
 */
import { InvalidArgumentError } from '../errors.js';
import { argmax, klDivergence, logSumExp } from '../model/sampling.js';

/**
 * Negative log-likelihood of `target` under `logits`, in nats: logsumexp(logits) − logits[target].
 *
 * @throws InvalidArgumentError when `target` is outside the logits.
 * @example
 * ```ts
 * nll([0, 0], 1); // ln 2
 * ```
 */
export function nll(logits: ArrayLike<number>, target: number): number {
  const t = logits[target];
  if (t === undefined) throw new InvalidArgumentError('target', `${target} is outside the logits (length ${logits.length})`);
  return logSumExp(logits) - t;
}

/**
 * Result of scoring next-token predictions.
 *
 * @example
 * ```ts
 * const { perplexity, top1 } = perplexityOfWindows(windows, logitsFn);
 * ```
 */
export interface PerplexityResult {
  /** Mean negative log-likelihood in nats. */
  readonly meanNll: number;
  /** exp(meanNll). */
  readonly perplexity: number;
  /** Fraction of predictions whose argmax is the actual next token. */
  readonly top1: number;
  /** Number of scored predictions. */
  readonly count: number;
}

/**
 * Accumulates NLL and top-1 hits of next-token predictions ({@link nll}, in double).
 *
 * @example
 * ```ts
 * const acc = new PerplexityAccumulator();
 * acc.add(logits, nextToken);
 * acc.result().perplexity;
 * ```
 */
export class PerplexityAccumulator {
  private nllSum = 0;
  private hits = 0;
  private n = 0;

  /** Scores one prediction; returns its NLL. */
  add(logits: ArrayLike<number>, target: number): number {
    const loss = nll(logits, target);
    this.nllSum += loss;
    if (argmax(logits) === target) this.hits++;
    this.n++;
    return loss;
  }

  /** Mean NLL, perplexity and top-1 accuracy so far (NaN when empty). */
  result(): PerplexityResult {
    const meanNll = this.nllSum / this.n;
    return { meanNll, perplexity: Math.exp(meanNll), top1: this.hits / this.n, count: this.n };
  }
}

/**
 * Agreement with a reference, so far: the share of predictions whose argmax equals the reference's, and the mean
 * KL(P_ref ‖ P) in nats.
 *
 * @example
 * ```ts
 * const { agreement, meanKl } = comparison.result();
 * ```
 */
export interface AgreementResult {
  /** agreed / compared (NaN when nothing was compared). */
  readonly agreement: number;
  readonly agreed: number;
  readonly compared: number;
  /** Mean KL(P_ref ‖ P) in nats (NaN when nothing was compared). */
  readonly meanKl: number;
}

/**
 * Compares predictions with a reference's on the same context (the full cache against a compressed one): argmax
 * agreement and KL(P_ref ‖ P).
 *
 * @example
 * ```ts
 * const comparison = new AgreementAccumulator();
 * comparison.add(fullLogits, compressedLogits);
 * comparison.result().agreement;
 * ```
 */
export class AgreementAccumulator {
  private agreed = 0;
  private klSum = 0;
  private n = 0;

  /** Compares one prediction with the reference's; returns its KL(P_ref ‖ P). */
  add(reference: ArrayLike<number>, logits: ArrayLike<number>): number {
    if (argmax(reference) === argmax(logits)) this.agreed++;
    const kl = klDivergence(reference, logits);
    this.klSum += kl;
    this.n++;
    return kl;
  }

  result(): AgreementResult {
    return { agreement: this.agreed / this.n, agreed: this.agreed, compared: this.n, meanKl: this.klSum / this.n };
  }
}

/**
 * Gives the logits predicting the token after `token`, which sits at position `pos` of window `windowIndex`.
 * Called with pos = 0, 1, 2, … for each window in turn; reset the model's cache when pos is 0.
 */
export type LogitsFn = (token: number, pos: number, windowIndex: number) => ArrayLike<number>;

/**
 * Async variant of {@link LogitsFn} for GPU runners.
 */
export type AsyncLogitsFn = (token: number, pos: number, windowIndex: number) => Promise<ArrayLike<number>> | ArrayLike<number>;

/**
 * Scores every next token of every window with a full context: feeds window[0..n−2] and compares the logits at
 * each position with the following id.
 *
 * @example
 * ```ts
 * const model = new ReferenceLlama(checkpoint);
 * const r = perplexityOfWindows(windows, (token, pos) => { if (pos === 0) model.reset(); return model.forward(token, pos); });
 * r.perplexity; // ≈ 3.653 for stories260K
 * ```
 */
export function perplexityOfWindows(windows: readonly ArrayLike<number>[], logitsFn: LogitsFn): PerplexityResult {
  const acc = new PerplexityAccumulator();
  windows.forEach((win, w) => {
    for (let pos = 0; pos + 1 < win.length; pos++) acc.add(logitsFn(win[pos] as number, pos, w), win[pos + 1] as number);
  });
  return acc.result();
}

/**
 * {@link perplexityOfWindows} for a logits function that may return promises (awaited one at a time, in order).
 *
 * @example
 * ```ts
 * const r = await perplexityOfWindowsAsync(windows, (token, pos, w) => gpuModel.step(w, token, pos));
 * ```
 */
export async function perplexityOfWindowsAsync(
  windows: readonly ArrayLike<number>[],
  logitsFn: AsyncLogitsFn,
): Promise<PerplexityResult> {
  const acc = new PerplexityAccumulator();
  for (let w = 0; w < windows.length; w++) {
    const win = windows[w] as ArrayLike<number>;
    for (let pos = 0; pos + 1 < win.length; pos++) acc.add(await logitsFn(win[pos] as number, pos, w), win[pos + 1] as number);
  }
  return acc.result();
}
