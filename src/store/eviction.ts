/**
 * Eviction policies: which unpinned entry leaves first when a tier needs room. Each ranks the candidates; the
 * lowest rank goes first. Ties (entries equal under the policy) go in least-recently-used order, so every
 * policy is deterministic even under a clock that does not move.
 */
import { InvalidArgumentError } from '../errors.js';

/** What a policy may look at. */
export interface EvictionCandidate {
  readonly key: string;
  readonly bytes: number;
  /** Hits (`get`s that found it) since it was stored. */
  readonly hits: number;
  /** Clock time (ms) of its last use: the put, or the latest hit. */
  readonly lastUsedMs: number;
  /** Order of its last use among all uses of the tier (strictly increasing): breaks every tie. */
  readonly useOrder: number;
  readonly prefillTokens: number;
}

/** A policy: `rank` orders candidates at clock time `nowMs`; lower ranks are evicted first. */
export interface EvictionPolicy {
  readonly name: string;
  rank(candidate: EvictionCandidate, nowMs: number): number;
}

/** The names {@link evictionPolicy} accepts. */
export type EvictionPolicyName = 'lru' | 'lfu' | 'priority-decay';

/** Least recently used first. */
export const lru: EvictionPolicy = { name: 'lru', rank: (c) => c.useOrder };

/** Least frequently used (fewest hits) first; among equals, least recently used first. */
export const lfu: EvictionPolicy = { name: 'lfu', rank: (c) => c.hits };

/** Default half-life of priority-decay: ten minutes. */
export const DEFAULT_HALF_LIFE_MS = 10 * 60 * 1000;

/**
 * Priority-decay, the eviction of a context cache: the entry worth least per byte goes first, where
 *
 *   priority = (hits + 1) × prefillTokens × 2^(−age / halfLife) / bytes,   age = now − lastUsed
 *
 * so an entry's worth grows with its hits and with the prefill each hit saves, halves every `halfLifeMs` it goes
 * unused, and is shared out over the bytes it occupies (a small entry that saves much stays; a large one that is
 * rarely hit leaves). Ranked as log₂(priority) = log₂(hits + 1) + log₂(prefillTokens) − age / halfLife −
 * log₂(bytes), the same order without underflow to 0 after a long idle time; bytes and prefill tokens count as at
 * least 1.
 *
 * @throws InvalidArgumentError for a half-life that is not a positive finite number.
 * @example
 * ```ts
 * new MemoryTier({ maxBytes: 64 << 20, eviction: priorityDecay({ halfLifeMs: 60_000 }) });
 * ```
 */
export function priorityDecay(options: { readonly halfLifeMs?: number } = {}): EvictionPolicy {
  const halfLifeMs = options.halfLifeMs ?? DEFAULT_HALF_LIFE_MS;
  if (!(halfLifeMs > 0) || !Number.isFinite(halfLifeMs)) throw new InvalidArgumentError('halfLifeMs', `must be a positive number; got ${halfLifeMs}`);
  return {
    name: 'priority-decay',
    rank: (c, nowMs) =>
      Math.log2(c.hits + 1) + Math.log2(Math.max(1, c.prefillTokens)) - Math.max(0, nowMs - c.lastUsedMs) / halfLifeMs - Math.log2(Math.max(1, c.bytes)),
  };
}

/**
 * A policy by name (priority-decay with the default half-life), or the policy itself.
 *
 * @throws InvalidArgumentError for an unknown name.
 */
export function evictionPolicy(policy: EvictionPolicyName | EvictionPolicy): EvictionPolicy {
  if (typeof policy !== 'string') return policy;
  if (policy === 'lru') return lru;
  if (policy === 'lfu') return lfu;
  if (policy === 'priority-decay') return priorityDecay();
  throw new InvalidArgumentError('eviction', `unknown policy "${String(policy)}"; known: lru, lfu, priority-decay`);
}

/**
 * The candidates in the order `policy` evicts them (lowest rank first, ties least recently used first).
 *
 * @example
 * ```ts
 * const [victim] = evictionOrder(candidates, lru, now);
 * ```
 */
export function evictionOrder(candidates: readonly EvictionCandidate[], policy: EvictionPolicy, nowMs: number): EvictionCandidate[] {
  return candidates
    .map((candidate) => ({ candidate, rank: policy.rank(candidate, nowMs) }))
    .sort((a, b) => a.rank - b.rank || a.candidate.useOrder - b.candidate.useOrder)
    .map(({ candidate }) => candidate);
}
