import { InvalidArgumentError } from '../errors.js';

/**
 * Options of prompt-lookup drafting (vLLM's names).
 *
 * @example
 * ```ts
 * const options: PromptLookupOptions = { numSpeculative: 10, lookupMax: 3, lookupMin: 1 };
 * ```
 */
export interface PromptLookupOptions {
  /** The most draft tokens per verification pass (default 10). */
  readonly numSpeculative?: number;
  /** Longest n-gram matched against the end of the text (default 3). */
  readonly lookupMax?: number;
  /** Shortest n-gram matched (default 1). */
  readonly lookupMin?: number;
}

/** {@link PromptLookupOptions} with every default filled in and checked. */
export interface ResolvedPromptLookup {
  readonly numSpeculative: number;
  readonly lookupMax: number;
  readonly lookupMin: number;
}

/** Validates prompt-lookup options (InvalidArgumentError naming the field) and fills in the defaults. */
export function resolvePromptLookup(options: PromptLookupOptions = {}): ResolvedPromptLookup {
  const numSpeculative = options.numSpeculative ?? 10;
  const lookupMax = options.lookupMax ?? 3;
  const lookupMin = options.lookupMin ?? 1;
  if (!Number.isInteger(numSpeculative) || numSpeculative < 1) {
    throw new InvalidArgumentError('numSpeculative', `must be an integer ≥ 1; got ${numSpeculative}`);
  }
  if (!Number.isInteger(lookupMin) || lookupMin < 1) throw new InvalidArgumentError('lookupMin', `must be an integer ≥ 1; got ${lookupMin}`);
  if (!Number.isInteger(lookupMax) || lookupMax < lookupMin) {
    throw new InvalidArgumentError('lookupMax', `must be an integer ≥ lookupMin (${lookupMin}); got ${lookupMax}`);
  }
  return { numSpeculative, lookupMax, lookupMin };
}

/**
 * Prompt-lookup drafting: the text so far (prompt and everything generated) indexed by its n-grams, so that the
 * next tokens can be guessed by finding the latest earlier occurrence of the text's last n tokens (n from
 * lookupMax down to lookupMin) and proposing what followed it. Each {@link push} costs O(lookupMax); each
 * {@link draft} O(lookupMax + drafts). Pure host code: the ids are here, no model runs.
 *
 * @example
 * ```ts
 * const lookup = new PromptLookup({ lookupMax: 3 });
 * lookup.push([1, 5, 6, 7, 8, 2, 5, 6]);
 * lookup.draft(3); // [7, 8, 2]: "5 6" occurred before, followed by 7 8 2
 * ```
 */
export class PromptLookup {
  readonly options: ResolvedPromptLookup;
  readonly #tokens: number[] = [];
  /** Per n − lookupMin: n-gram key → index of the token that followed its latest occurrence. */
  readonly #next: Map<string, number>[];

  constructor(options: PromptLookupOptions = {}) {
    this.options = resolvePromptLookup(options);
    this.#next = Array.from({ length: this.options.lookupMax - this.options.lookupMin + 1 }, () => new Map());
  }

  /** The tokens pushed so far (a copy). */
  get tokens(): number[] {
    return [...this.#tokens];
  }

  get length(): number {
    return this.#tokens.length;
  }

  /** Appends tokens to the text. */
  push(tokens: readonly number[]): void {
    for (const token of tokens) {
      const i = this.#tokens.length;
      // The n-grams ending just before this token now have a continuation: this token.
      for (let n = this.options.lookupMin; n <= this.options.lookupMax && n <= i; n++) {
        this.#next[n - this.options.lookupMin]?.set(this.#key(i - n, i), i);
      }
      this.#tokens.push(token);
    }
  }

  /** Forgets every token from index `length` on (the text was rolled back). */
  truncate(length: number): void {
    if (length >= this.#tokens.length) return;
    const kept = this.#tokens.slice(0, Math.max(0, length));
    this.#tokens.length = 0;
    for (const map of this.#next) map.clear();
    this.push(kept);
  }

  /**
   * Up to `max` draft tokens: what followed the latest earlier occurrence of the longest suffix n-gram
   * (lookupMax ≥ n ≥ lookupMin) that occurred before; [] when none did. The continuation may run into the suffix
   * itself (a repeating pattern drafts its own repeats).
   */
  draft(max: number = this.options.numSpeculative): number[] {
    const length = this.#tokens.length;
    if (max <= 0) return [];
    for (let n = Math.min(this.options.lookupMax, length); n >= this.options.lookupMin; n--) {
      const start = this.#next[n - this.options.lookupMin]?.get(this.#key(length - n, length));
      if (start !== undefined) return this.#tokens.slice(start, Math.min(length, start + max));
    }
    return [];
  }

  #key(from: number, to: number): string {
    return this.#tokens.slice(from, to).join(',');
  }
}

/**
 * How many drafts to verify next: starts at numSpeculative, follows the acceptance of each pass (all accepted:
 * double, up to the maximum; some: one more than were accepted; none: halve), and after a pass that accepted
 * nothing with a single draft stops drafting for `restAfterMiss` tokens, so text without repeats runs at plain
 * decoding speed. Pure.
 *
 * @example
 * ```ts
 * const k = new AdaptiveDraftLength(10);
 * k.next();          // 10
 * k.record(10, 3);   // 3 of 10 accepted
 * k.next();          // 4
 * ```
 */
export class AdaptiveDraftLength {
  #k: number;
  #rest = 0;

  constructor(
    readonly max: number,
    readonly restAfterMiss = 8,
  ) {
    if (!Number.isInteger(max) || max < 1) throw new InvalidArgumentError('max', `must be an integer ≥ 1; got ${max}`);
    this.#k = max;
  }

  /** Drafts to propose for the next pass (0 while resting). */
  next(): number {
    return this.#rest > 0 ? 0 : this.#k;
  }

  /** Records a pass: `drafted` proposed, `accepted` of them kept; or a plain step (drafted 0) while resting. */
  record(drafted: number, accepted: number): void {
    if (drafted === 0) {
      if (this.#rest > 0) this.#rest--;
      return;
    }
    if (accepted === drafted) this.#k = Math.min(this.max, 2 * this.#k);
    else if (accepted > 0) this.#k = Math.min(this.max, accepted + 1);
    else if (this.#k === 1) this.#rest = this.restAfterMiss;
    else this.#k = Math.max(1, Math.floor(this.#k / 2));
  }
}
