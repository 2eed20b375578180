/**
 * The evaluation text, cut into token windows the way ../shared/README.md prescribes (the metrics over them are
 * in src/eval/metrics.ts).
 */
import { InvalidArgumentError } from '../errors.js';
import type { TextTokenizer } from '../model/tokenizer.js';

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
 * of `window − 1` tokens and the tokenizer's BOS (llama2.c: id 1) is prepended to each; a model without BOS
 * (Qwen2.5) starts each window with its first EOS id, the separator it was trained to see between documents.
 * Throws when the text is too short or the tokenizer has neither.
 *
 * @example
 * ```ts
 * const windows = prepareEvalWindows(readFileSync('../shared/data/tinystories_dev.txt', 'utf8'), tokenizer);
 * windows.length; // 8, each 512 ids starting with 1
 * ```
 */
export function prepareEvalWindows(text: string, tokenizer: Pick<TextTokenizer, 'encode' | 'bosId' | 'eosIds'>, options: EvalWindowOptions = {}): Int32Array[] {
  const start = tokenizer.bosId ?? tokenizer.eosIds[0];
  if (start === undefined) throw new InvalidArgumentError('tokenizer', 'defines neither a BOS nor an EOS id to start the evaluation windows with');
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
    win[0] = start;
    win.set(ids.slice(w * per, (w + 1) * per), 1);
    out.push(win);
  }
  return out;
}
