import { InvalidArgumentError } from '../errors.js';
import { argmax, logSumExp } from './sampling.js';
import { BOS_ID, type TextTokenizer } from './tokenizer.js';

/**
 * Options of {@link prepareEvalWindows}.
 *
 * @example
 * ```ts
 * prepareEvalWindows(text, tokenizer, { window: 256, windows: 4 });
 * ```
 */
export interface EvalWindowOptions {
  /** Tokens per window including the leading BOS. Default 512. */
  readonly window?: number;
  /** Number of windows. Default 8. */
  readonly windows?: number;
}

/**
 * Cuts an evaluation text into token windows as ../shared/README.md prescribes: every "\n\n" becomes "\n", the
 * first 6 · window · windows characters are encoded without BOS, ids are cut into `windows` consecutive windows
 * of `window − 1` tokens and BOS (id 1) is prepended to each. Throws when the text is too short.
 *
 * @example
 * ```ts
 * const windows = prepareEvalWindows(readFileSync('../shared/data/tinystories_dev.txt', 'utf8'), tokenizer);
 * windows.length; // 8, each 512 ids starting with 1
 * ```
 */
export function prepareEvalWindows(text: string, tokenizer: Pick<TextTokenizer, 'encode'>, options: EvalWindowOptions = {}): Int32Array[] {
  const window = options.window ?? 512;
  const windows = options.windows ?? 8;
  if (!Number.isInteger(window) || window < 2) throw new InvalidArgumentError('window', `must be an integer ≥ 2, got ${window}`);
  if (!Number.isInteger(windows) || windows < 1) throw new InvalidArgumentError('windows', `must be an integer ≥ 1, got ${windows}`);
  const chars = 6 * window * windows;
  const cleaned = text.replaceAll('\n\n', '\n').slice(0, chars);
  const ids = tokenizer.encode(cleaned, { bos: false });
  const per = window - 1;
  if (ids.length < per * windows) {
    throw new InvalidArgumentError(
      'text',
      `${cleaned.length} characters encode to ${ids.length} tokens, fewer than ${windows} windows × ${per} tokens; use a longer text or fewer/smaller windows`,
    );
  }
  const out: Int32Array[] = [];
  for (let w = 0; w < windows; w++) {
    const win = new Int32Array(window);
    win[0] = BOS_ID;
    win.set(ids.slice(w * per, (w + 1) * per), 1);
    out.push(win);
  }
  return out;
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
 * Accumulates NLL and top-1 hits of next-token predictions (NLL in double: logsumexp − logit[target]).
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
    const t = logits[target];
    if (t === undefined) throw new InvalidArgumentError('target', `${target} is outside the logits (length ${logits.length})`);
    const nll = logSumExp(logits) - t;
    this.nllSum += nll;
    if (argmax(logits) === target) this.hits++;
    this.n++;
    return nll;
  }

  /** Mean NLL, perplexity and top-1 accuracy so far (NaN when empty). */
  result(): PerplexityResult {
    const meanNll = this.nllSum / this.n;
    return { meanNll, perplexity: Math.exp(meanNll), top1: this.hits / this.n, count: this.n };
  }
}

/**
 * Gives the logits predicting the token after `token`, which sits at position `pos` of window `windowIndex`.
 * Called with pos = 0, 1, 2, … for each window in turn; reset the model's cache when pos is 0.
 *
 * @example
 * ```ts
 * const fn: LogitsFn = (token, pos) => { if (pos === 0) model.reset(); return model.forward(token, pos); };
 * ```
 */
export type LogitsFn = (token: number, pos: number, windowIndex: number) => ArrayLike<number>;

/**
 * Async variant of {@link LogitsFn} for GPU runners.
 *
 * @example
 * ```ts
 * const fn: AsyncLogitsFn = async (token, pos, w) => engine.step(w, token, pos);
 * ```
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
