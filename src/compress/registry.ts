/**
 * Name → factory for the scoring policies. A new policy is one file (a {@link BasePolicy} subclass: CPU score and
 * GPU plan) plus one `registerPolicy` line, here or in the caller's code; the CLI, benchmarks and the caches'
 * `compress({ policy })` then name it.
 */
import { UnknownPolicyError } from '../errors.js';
import type { BasePolicy, PolicyOptions, PolicyRequirements, ScoringPolicy } from './policy.js';
import { H2OPolicy } from './policies/h2o.js';
import { KnormPolicy } from './policies/knorm.js';
import { KvCompressPolicy } from './policies/kvcompress.js';
import { RandomPolicy, type RandomOptions } from './policies/random.js';
import { SnapKVPolicy, type SnapKVOptions } from './policies/snapkv.js';
import { StreamingPolicy } from './policies/streaming.js';
import { TovaPolicy } from './policies/tova.js';

/**
 * Options any built-in policy accepts (policies ignore the fields that are not theirs).
 */
export type AnyPolicyOptions = PolicyOptions & SnapKVOptions & RandomOptions;

/**
 * Builds a policy from options.
 *
 * @example
 * ```ts
 * registerPolicy('mine', (o) => new MyPolicy(o));
 * ```
 */
export type PolicyFactory = (options?: AnyPolicyOptions) => ScoringPolicy;

const factories = new Map<string, PolicyFactory>([
  ['snapkv', (o) => new SnapKVPolicy(o)],
  ['h2o', (o) => new H2OPolicy(o)],
  ['kvcompress', (o) => new KvCompressPolicy(o)],
  ['tova', (o) => new TovaPolicy(o)],
  ['knorm', (o) => new KnormPolicy(o)],
  ['streaming', (o) => new StreamingPolicy(o)],
  ['random', (o) => new RandomPolicy(o)],
]);

/**
 * Creates a policy by name.
 *
 * @throws UnknownPolicyError when `name` is not registered (the message lists the known names).
 * @example
 * ```ts
 * const policy = createPolicy('snapkv', { window: 16, kernelSize: 7, pooling: 'max' });
 * ```
 */
export function createPolicy(name: string, options: AnyPolicyOptions = {}): ScoringPolicy {
  const factory = factories.get(name);
  if (!factory) throw new UnknownPolicyError(name, policyNames());
  return factory(options);
}

/**
 * Names of all registered policies, in registration order.
 *
 * @example
 * ```ts
 * policyNames(); // ['snapkv', 'h2o', 'kvcompress', 'tova', 'knorm', 'streaming', 'random']
 * ```
 */
export function policyNames(): string[] {
  return [...factories.keys()];
}

/**
 * Registers (or replaces) a policy factory under `name`.
 *
 * @example
 * ```ts
 * registerPolicy('mine', (o) => new MyPolicy(o));
 * ```
 */
export function registerPolicy(name: string, factory: PolicyFactory): void {
  factories.set(name, factory);
}

/**
 * What the policy registered under `name` needs (observation window, attention statistics), read from an
 * instance with default options: requirements follow from a policy's scoring family, never from its options.
 *
 * @throws UnknownPolicyError when `name` is not registered.
 * @example
 * ```ts
 * policyRequirements('tova'); // { window: true, statistics: false }
 * ```
 */
export function policyRequirements(name: string): PolicyRequirements {
  return createPolicy(name).requires;
}
