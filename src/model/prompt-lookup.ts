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
 * How many drafts to verify next, chosen to maximise expected tokens per unit of time: with a per-draft acceptance
 * α (estimated from recent passes, decaying toward ½ so that a cold streak is re-probed) a pass with k drafts
 * emits (1 − α^(k+1)) / (1 − α) tokens on average and costs 1 + ρ·k one-token passes, ρ the measured marginal cost
 * of a verified token (0 until measured: on a GPU a short verification costs about one decode step; on
 * SwiftShader ρ ≈ 0.3). Returns 0 (plain decoding) when no k pays, so text without repeats runs at plain speed.
 * Two rules keep a wrong guess cheap where ρ is high: until ρ is measured a pass verifies at most
 * {@link PROBE_DRAFTS} drafts (a probe of 10 misses on SwiftShader costs 4 passes), and a plain step decays the
 * evidence only by √decay, so a cold streak is re-probed about half as often as a pass with drafts forgets.
 * Pure apart from the timings it is given.
 *
 * @example
 * ```ts
 * const k = new AdaptiveDraftLength(10);
 * const drafts = lookup.draft(k.next());
 * k.record(drafts.length, accepted, passMilliseconds);
 * ```
 */
export class AdaptiveDraftLength {
  /** Drafts a pass verifies at most while the marginal cost of one is unmeasured. */
  static readonly PROBE_DRAFTS = 2;
  /** Decayed counts of accepted and rejected draft positions. */
  #accepted = 0;
  #rejected = 0;
  /** Mean milliseconds of a one-token pass, and of each extra verified token (null until measured). */
  #plainMs: number | null = null;
  #extraMs: number | null = null;
  /** Passes with drafts since the last plain one while no plain pass was timed. */
  #untimed = 0;

  /**
   * @param verifyCost The marginal cost of a verified token in one-token passes, when the caller knows it (a real
   * GPU's short verification costs about one decode step: ≈ 0); undefined measures it from the passes' timings.
   */
  constructor(
    readonly max: number,
    readonly decay = 0.9,
    readonly verifyCost?: number,
  ) {
    if (!Number.isInteger(max) || max < 1) throw new InvalidArgumentError('max', `must be an integer ≥ 1; got ${max}`);
    if (!(decay > 0 && decay < 1)) throw new InvalidArgumentError('decay', `must be in (0, 1); got ${decay}`);
    if (verifyCost !== undefined && !(Number.isFinite(verifyCost) && verifyCost >= 0)) {
      throw new InvalidArgumentError('verifyCost', `must be a finite number ≥ 0 (one-token passes per verified token); got ${verifyCost}`);
    }
  }

  /** The estimated probability that a draft is accepted, given the ones before it were. */
  get acceptance(): number {
    return (this.#accepted + 1) / (this.#accepted + this.#rejected + 2);
  }

  /** The measured marginal cost of a verified token in one-token passes (0 until measured). */
  get marginalCost(): number {
    if (this.verifyCost !== undefined) return this.verifyCost;
    return this.#plainMs !== null && this.#extraMs !== null && this.#plainMs > 0 ? this.#extraMs / this.#plainMs : 0;
  }

  /** Drafts to propose for the next pass (0: a plain step). */
  next(): number {
    // Without a timed one-token pass the marginal cost is unknown: take one to measure it.
    const known = this.verifyCost !== undefined;
    if (!known && this.#plainMs === null && this.#untimed >= 3) return 0;
    const alpha = Math.min(this.acceptance, 0.999);
    const rho = this.marginalCost;
    const limit = !known && this.#extraMs === null ? Math.min(this.max, AdaptiveDraftLength.PROBE_DRAFTS) : this.max;
    let best = 0;
    let bestRate = 1;
    for (let k = 1; k <= limit; k++) {
      const rate = (1 - alpha ** (k + 1)) / (1 - alpha) / (1 + rho * k);
      if (rate > bestRate * 1.02) {
        best = k;
        bestRate = rate;
      }
    }
    return best;
  }

  /**
   * Records a pass: `drafted` proposed, `accepted` of them kept (0 and 0 for a plain step), and optionally how long
   * it took (forward pass and rollback).
   */
  record(drafted: number, accepted: number, milliseconds?: number): void {
    const decay = drafted === 0 ? Math.sqrt(this.decay) : this.decay;
    this.#accepted = decay * this.#accepted + accepted;
    this.#rejected = decay * this.#rejected + (accepted < drafted ? 1 : 0);
    if (milliseconds === undefined || !Number.isFinite(milliseconds)) return;
    this.#untimed = drafted === 0 ? 0 : this.#untimed + 1;
    const mean = (old: number | null, value: number): number => (old === null ? value : 0.8 * old + 0.2 * value);
    if (drafted === 0) this.#plainMs = mean(this.#plainMs, milliseconds);
    else if (this.#plainMs !== null) this.#extraMs = mean(this.#extraMs, Math.max(0, (milliseconds - this.#plainMs) / drafted));
  }
}
