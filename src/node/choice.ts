import { InvalidArgumentError } from '../errors.js';

/**
 * Checks a choice given as text (an option or an environment variable) against `choices`; `source` names where it
 * came from in the error. Empty or missing means `fallback`.
 *
 * @example
 * ```ts
 * parseChoice(process.env.KVCOMPACT_ADAPTER, 'KVCOMPACT_ADAPTER', ['auto', 'hardware', 'software'], 'auto');
 * parseChoice('gpu', '--adapter', ['auto', 'hardware', 'software'], 'auto'); // throws: --adapter: must be auto, hardware or software; got "gpu"
 * ```
 */
export function parseChoice<C extends string>(value: string | undefined, source: string, choices: readonly C[], fallback: C): C {
  if (value === undefined || value === '') return fallback;
  if ((choices as readonly string[]).includes(value)) return value as C;
  const listed = choices.length > 1 ? `${choices.slice(0, -1).join(', ')} or ${choices[choices.length - 1]}` : choices.join('');
  throw new InvalidArgumentError(source, `must be ${listed}; got "${value}"`);
}
