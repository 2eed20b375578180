// One flag table per command: it drives node:util's parseArgs, the `--help` text and the list of valid flags that
// an unknown flag is answered with, so the three can never disagree.
import { accessSync, constants, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError } from '../errors.js';
import { ADAPTER_CHOICES, type AdapterChoice, parseAdapterChoice } from '../node/gpu.js';

/**
 * One flag of a command.
 *
 * @example
 * ```ts
 * const steps: FlagSpec = { type: 'string', value: 'N', help: 'tokens to generate (default 64)' };
 * ```
 */
export interface FlagSpec {
  readonly type: 'string' | 'boolean';
  /** How the value reads in the usage text (`N`, `FILE.svg`); string flags only. */
  readonly value?: string;
  /** What it does and its default, for the usage text. */
  readonly help: string;
}

/**
 * A command's flags by long name (without `--`).
 *
 * @example
 * ```ts
 * const flags = { json: { type: 'boolean', help: 'print JSON' } } as const satisfies FlagTable;
 * ```
 */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/**
 * The parsed values of a flag table: strings for string flags, booleans for boolean flags, absent when not given.
 *
 * @example
 * ```ts
 * const values: FlagValues<typeof GENERATE_FLAGS> = { prompt: 'Lily', json: true };
 * ```
 */
export type FlagValues<T extends FlagTable> = {
  -readonly [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string;
};

/**
 * A command: its name, what it does and its flags. `usageText` and `parseFlags` read it.
 *
 * @example
 * ```ts
 * const INFO: CommandSpec<typeof INFO_FLAGS> = { name: 'info', summary: 'adapter, features, limits', flags: INFO_FLAGS };
 * ```
 */
export interface CommandSpec<T extends FlagTable = FlagTable> {
  readonly name: string;
  /** One line for the top-level command list. */
  readonly summary: string;
  /** More lines for the command's own `--help`. */
  readonly details?: string;
  readonly flags: T;
}

const HELP_FLAG: FlagSpec = { type: 'boolean', help: 'print this help and exit' };
const COLUMN = 28;

function flagLabel(name: string, spec: FlagSpec): string {
  return name === 'help' ? '-h, --help' : `--${name}${spec.type === 'string' ? ` ${spec.value ?? 'VALUE'}` : ''}`;
}

/**
 * The `--help` text of a command, generated from its flag table.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(EVAL_COMMAND));
 * ```
 */
export function usageText(spec: CommandSpec): string {
  const lines = [`usage: kvcompact ${spec.name} [options]`, '', spec.summary];
  if (spec.details) lines.push(spec.details);
  lines.push('', 'options:');
  for (const [name, flag] of Object.entries({ ...spec.flags, help: HELP_FLAG })) {
    const label = `  ${flagLabel(name, flag)}`;
    const [first = '', ...rest] = flag.help.split('\n');
    lines.push(label.length < COLUMN ? `${label.padEnd(COLUMN)}${first}` : `${label}\n${' '.repeat(COLUMN)}${first}`);
    for (const more of rest) lines.push(`${' '.repeat(COLUMN)}${more}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The flag names of a table as they are typed, `--help` included. */
function validFlags(spec: CommandSpec): string {
  return [...Object.keys(spec.flags), 'help'].map((name) => `--${name}`).join(', ');
}

/**
 * Parses `argv` against the command's flag table (strictly: no positionals, no unknown flags). Returns 'help' when
 * `--help` or `-h` is among the arguments, whatever else is there. Every mistake throws {@link UsageError}; an
 * unknown flag's message lists the valid ones.
 *
 * @example
 * ```ts
 * const values = parseFlags(INFO_COMMAND, ['--json']);
 * if (values === 'help') process.stdout.write(usageText(INFO_COMMAND));
 * ```
 */
export function parseFlags<T extends FlagTable>(spec: CommandSpec<T>, argv: readonly string[]): FlagValues<T> | 'help' {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, flag] of Object.entries(spec.flags)) options[name] = { type: flag.type };
  const beforeSeparator = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv;
  const asksHelp = beforeSeparator.includes('--help') || beforeSeparator.includes('-h');
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values as typeof values;
  } catch (error) {
    if (asksHelp) return 'help';
    throw usageErrorOf(spec, error);
  }
  if (values.help) return 'help';
  delete values.help;
  return values as FlagValues<T>;
}

function usageErrorOf(spec: CommandSpec, error: unknown): unknown {
  if (!(error instanceof Error) || !('code' in error)) return error;
  const quoted = /'([^']*)'/.exec(error.message)?.[1] ?? '';
  const hint = `run \`kvcompact ${spec.name} --help\` for usage`;
  switch (error.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return new UsageError(quoted, `unknown option; valid options: ${validFlags(spec)}`);
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new UsageError(quoted, `unexpected argument: \`kvcompact ${spec.name}\` takes only options (${hint})`);
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      const flag = quoted.split(' ')[0] ?? quoted;
      const takesValue = spec.flags[flag.replace(/^--?/, '')]?.type === 'string';
      if (!takesValue) return new UsageError(flag, `takes no value (${hint})`);
      // parseArgs will not take "-1" as a value after a space: it could be a mistyped flag.
      return new UsageError(flag, error.message.includes('ambiguous') ? `write a value that starts with "-" as ${flag}=VALUE` : 'expects a value');
    }
    default:
      return error;
  }
}

/**
 * The items of a comma-separated list flag, or `fallback` when the flag is absent.
 *
 * @example
 * ```ts
 * listFlag('--policies', 'full, snapkv', ['full']); // ['full', 'snapkv']
 * ```
 */
export function listFlag(flag: string, value: string | undefined, fallback: readonly string[]): string[] {
  if (value === undefined) return [...fallback];
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new UsageError(flag, 'expects a comma-separated list');
  return items;
}

/**
 * Every item of a list flag must be one of `known`.
 *
 * @example
 * ```ts
 * choicesFlag('--budget-mode', 'uniform,adakv', ['uniform', 'adakv', 'pyramid'], ['uniform']);
 * ```
 */
export function choicesFlag(flag: string, value: string | undefined, known: readonly string[], fallback: readonly string[]): string[] {
  const items = listFlag(flag, value, fallback);
  const unknown = items.filter((item) => !known.includes(item));
  if (unknown.length > 0) throw new UsageError(flag, `unknown ${unknown.join(', ')}; known: ${known.join(', ')}`);
  return items;
}

/**
 * One value that must be one of `known`.
 *
 * @example
 * ```ts
 * choiceFlag('--engine', 'gpu', ['cpu', 'gpu'], 'cpu'); // 'gpu'
 * ```
 */
export function choiceFlag<C extends string>(flag: string, value: string | undefined, known: readonly C[], fallback: C): C {
  if (value === undefined) return fallback;
  if (!(known as readonly string[]).includes(value)) {
    throw new UsageError(flag, `must be ${known.join(', ').replace(/, ([^,]*)$/, ' or $1')}; got "${value}"`);
  }
  return value as C;
}

/**
 * An integer flag within [min, max].
 *
 * @example
 * ```ts
 * integerFlag('--steps', '32', 64, { min: 1 }); // 32
 * ```
 */
export function integerFlag(flag: string, value: string | undefined, fallback: number, range: { min?: number; max?: number } = {}): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(n)) throw new UsageError(flag, `expects an integer; got "${value}"`);
  checkRange(flag, n, range);
  return n;
}

/**
 * A number flag within [min, max].
 *
 * @example
 * ```ts
 * numberFlag('--top-p', '0.9', 0.9, { min: 0, max: 1 }); // 0.9
 * ```
 */
export function numberFlag(flag: string, value: string | undefined, fallback: number, range: { min?: number; max?: number } = {}): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(flag, `expects a number; got "${value}"`);
  checkRange(flag, n, range);
  return n;
}

function checkRange(flag: string, n: number, { min, max }: { min?: number; max?: number }): void {
  if (min !== undefined && n < min) throw new UsageError(flag, `must be at least ${min}; got ${n}`);
  if (max !== undefined && n > max) throw new UsageError(flag, `must be at most ${max}; got ${n}`);
}

/**
 * A list of positive integers.
 *
 * @example
 * ```ts
 * integersFlag('--budgets', '32,64', [128]); // [32, 64]
 * ```
 */
export function integersFlag(flag: string, value: string | undefined, fallback: readonly number[]): number[] {
  return listFlag(flag, value, fallback.map(String)).map((item) => integerFlag(flag, item, 0, { min: 1 }));
}

/**
 * The `--adapter` flag spec every GPU command shares.
 *
 * @example
 * ```ts
 * const flags = { adapter: ADAPTER_FLAG, json: { type: 'boolean', help: 'print JSON' } } as const;
 * ```
 */
export const ADAPTER_FLAG = {
  type: 'string',
  value: ADAPTER_CHOICES.join('|'),
  help: 'which WebGPU adapter (default auto: a GPU, else SwiftShader;\nalso env KVCOMPACT_ADAPTER)',
} as const satisfies FlagSpec;

/**
 * The adapter asked for by `--adapter`, else by `KVCOMPACT_ADAPTER`, else 'auto'; a wrong value is a usage error
 * naming where it came from.
 *
 * @example
 * ```ts
 * adapterFlag(values.adapter); // 'auto'
 * ```
 */
export function adapterFlag(value: string | undefined, env: string | undefined = process.env.KVCOMPACT_ADAPTER): AdapterChoice {
  const [given, source] = value !== undefined ? [value, '--adapter'] : [env, 'KVCOMPACT_ADAPTER'];
  try {
    return parseAdapterChoice(given, source);
  } catch (error) {
    throw error instanceof Error ? new UsageError(source, error.message.replace(`${source}: `, '')) : error;
  }
}

/**
 * Checks that an output file can be written before any work starts: its directory exists and is writable, and the
 * path itself is not a directory. Returns the absolute path.
 *
 * @example
 * ```ts
 * const plot = writableFileFlag('--plot', 'out/plot.svg'); // throws UsageError when out/ does not exist
 * ```
 */
export function writableFileFlag(flag: string, path: string): string {
  const absolute = resolve(path);
  const dir = dirname(absolute);
  let dirStat;
  try {
    dirStat = statSync(dir);
  } catch {
    throw new UsageError(flag, `directory ${dir} does not exist; create it or write ${path} elsewhere`);
  }
  if (!dirStat.isDirectory()) throw new UsageError(flag, `${dir} is not a directory`);
  try {
    if (statSync(absolute).isDirectory()) throw new UsageError(flag, `${absolute} is a directory; name a file in it`);
  } catch (error) {
    if (error instanceof UsageError) throw error;
  }
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new UsageError(flag, `directory ${dir} is not writable; write ${path} elsewhere`);
  }
  return absolute;
}

/**
 * Prints the command's `--help` text on stdout; returns the exit status 0.
 *
 * @example
 * ```ts
 * if (values === 'help') return printUsage(EVAL_COMMAND);
 * ```
 */
export function printUsage(spec: CommandSpec): number {
  process.stdout.write(usageText(spec));
  return 0;
}
