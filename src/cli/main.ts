import { InvalidArgumentError, KvCompactError, UsageError } from '../errors.js';
import { BENCH_COMMAND, benchCommand } from './bench.js';
import { CAG_COMMAND, cagCommand } from './cag.js';
import { DEMO_COMMAND, demoCommand } from './demo.js';
import { EVAL_COMMAND, evalCommand } from './eval.js';
import { type CommandSpec, printUsage } from './flags.js';
import { GENERATE_COMMAND, generateCommand } from './generate.js';
import { INFO_COMMAND, infoCommand } from './info.js';
import { MERGE_EVAL_COMMAND, mergeEvalCommand } from './merge-eval.js';
import { SERVE_DEMO_COMMAND, serveDemoCommand } from './serve-demo.js';
import { STORE_COMMAND, storeCommand } from './store.js';

interface Command {
  readonly spec: CommandSpec;
  readonly run: (argv: string[]) => Promise<number>;
}

const COMMANDS: readonly Command[] = [
  { spec: INFO_COMMAND, run: infoCommand },
  { spec: GENERATE_COMMAND, run: generateCommand },
  { spec: CAG_COMMAND, run: cagCommand },
  { spec: STORE_COMMAND, run: storeCommand },
  { spec: DEMO_COMMAND, run: demoCommand },
  { spec: SERVE_DEMO_COMMAND, run: serveDemoCommand },
  { spec: EVAL_COMMAND, run: evalCommand },
  { spec: MERGE_EVAL_COMMAND, run: mergeEvalCommand },
  { spec: BENCH_COMMAND, run: benchCommand },
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.spec.name.length), 'help [COMMAND]'.length) + 4;
  return [
    'kvcompact — compress the attention KV cache on the GPU (WebGPU)',
    '',
    'usage: kvcompact <command> [options]',
    '       kvcompact <command> --help    the options of one command',
    '',
    'commands:',
    ...COMMANDS.map(({ spec }) => `  ${spec.name.padEnd(width)}${spec.summary}`),
    `  ${'help [COMMAND]'.padEnd(width)}this text, or the options of COMMAND`,
    '',
    'GPU commands take --adapter auto|hardware|software (or env KVCOMPACT_ADAPTER) and say on stderr which',
    'adapter they chose and why; model commands take --model DIR|FILE|hf:ORG/NAME (a Hugging Face folder, a',
    'llama2.c checkpoint with --tokenizer FILE, or a Hub model to download) and say which format they detected.',
    '',
  ].join('\n');
}

function find(name: string): Command | undefined {
  return COMMANDS.find((c) => c.spec.name === name);
}

/** One line for a typed error or a system error (ENOENT, EACCES, ...); the whole stack for a bug. */
function describe(error: unknown): string {
  if (error instanceof KvCompactError) return error.message;
  if (error instanceof Error && 'code' in error && 'syscall' in error) return error.message;
  return `internal error (please report it): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
}

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit status: 0 on success, 2 for a usage
 * error (a wrong flag, value, path or command), 1 for a failure while running. Errors print one line on stderr.
 *
 * @example
 * ```ts
 * process.exitCode = await main(['info', '--json']);
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  if (name === 'help' || name === '--help' || name === '-h') {
    const topic = rest[0] === undefined ? undefined : find(rest[0]);
    if (rest[0] !== undefined && topic === undefined) return unknownCommand(rest[0]);
    if (topic) return printUsage(topic.spec);
    process.stdout.write(usage());
    return 0;
  }
  const command = find(name);
  if (!command) return unknownCommand(name);
  try {
    return await command.run(rest);
  } catch (error) {
    process.stderr.write(`kvcompact ${name}: ${describe(error)}\n`);
    // Arguments the user can fix are usage errors; everything else failed while running.
    return error instanceof InvalidArgumentError ? 2 : 1;
  }
}

function unknownCommand(name: string): number {
  const error = new UsageError('kvcompact', `unknown command "${name}"; commands: ${COMMANDS.map((c) => c.spec.name).join(', ')}, help (kvcompact --help)`);
  process.stderr.write(`${error.message}\n`);
  return 2;
}

process.exitCode = await main(process.argv.slice(2));
