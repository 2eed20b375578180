import { parseArgs } from 'node:util';
import { KvCompactError } from '../errors.js';
import { createNodeGpu } from '../node/gpu.js';
import { BENCH_USAGE, benchCommand } from './bench.js';
import { DEMO_USAGE, demoCommand } from './demo.js';
import { GENERATE_USAGE, generateCommand } from './generate.js';
import { SERVE_DEMO_USAGE, serveDemoCommand } from './serve-demo.js';
import { EVAL_USAGE, evalCommand } from './eval.js';
import { formatInfo, infoReport } from './info.js';

const USAGE = `kvcompact — compress the attention KV cache on the GPU (WebGPU)

usage: kvcompact <command> [options]

commands:
  info [--json]            adapter, features and limits of the WebGPU device
${BENCH_USAGE}
${GENERATE_USAGE}
${DEMO_USAGE}
${SERVE_DEMO_USAGE}
${EVAL_USAGE}
  help                     this text

common options:
  --adapter auto|hardware|software   which adapter (also env KVCOMPACT_ADAPTER)
`;

type Command = (argv: string[]) => Promise<number>;

async function info(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' }, adapter: { type: 'string' } },
    strict: true,
  });
  const adapter = values.adapter as 'auto' | 'hardware' | 'software' | undefined;
  const gpu = await createNodeGpu(adapter ? { adapter } : {});
  try {
    const report = infoReport(gpu);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInfo(report)}\n`);
    return 0;
  } finally {
    await gpu.destroy();
  }
}

const COMMANDS: Record<string, Command> = {
  info,
  bench: benchCommand,
  generate: generateCommand,
  demo: demoCommand,
  'serve-demo': serveDemoCommand,
  eval: evalCommand,
  help: async () => {
    process.stdout.write(USAGE);
    return 0;
  },
};

/**
 * Runs the CLI with `argv` (without node and script) and returns the exit code.
 *
 * @example
 * ```ts
 * process.exitCode = await main(['info', '--json']); // 0 on success, 2 on a usage error
 * ```
 */
export async function main(argv: string[]): Promise<number> {
  const [name = 'help', ...rest] = argv;
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`kvcompact: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command(rest);
  } catch (error) {
    if (error instanceof KvCompactError || (error instanceof Error && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS'))) {
      process.stderr.write(`kvcompact ${name}: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

process.exitCode = await main(process.argv.slice(2));
