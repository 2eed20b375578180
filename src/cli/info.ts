import type { GpuContext } from '../gpu/context.js';
import { NEGOTIATED_LIMITS } from '../gpu/adapter-report.js';
import { ADAPTER_FLAG, adapterFlag, type CommandSpec, type FlagTable, parseFlags, printUsage } from './flags.js';
import { openCliGpu } from './gpu.js';

const INFO_FLAGS = {
  json: { type: 'boolean', help: 'print the report as JSON' },
  adapter: ADAPTER_FLAG,
} as const satisfies FlagTable;

/**
 * `kvcompact info`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(INFO_COMMAND));
 * ```
 */
export const INFO_COMMAND: CommandSpec<typeof INFO_FLAGS> = {
  name: 'info',
  summary: 'adapter, features and limits of the WebGPU device (the adapter chosen and why: on stderr)',
  flags: INFO_FLAGS,
};

/**
 * `kvcompact info`: prints the adapter identity, features and negotiated limits, or them as JSON with `--json`.
 *
 * @example
 * ```ts
 * process.exitCode = await infoCommand(['--json']);
 * ```
 */
export async function infoCommand(argv: string[]): Promise<number> {
  const values = parseFlags(INFO_COMMAND, argv);
  if (values === 'help') return printUsage(INFO_COMMAND);
  const gpu = await openCliGpu(adapterFlag(values.adapter));
  try {
    const report = infoReport(gpu);
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInfo(report)}\n`);
    return 0;
  } finally {
    await gpu.destroy();
  }
}

/**
 * What `kvcompact info --json` prints.
 *
 * @example
 * ```ts
 * const report: InfoReport = infoReport(gpu);
 * report.limits.maxBufferSize; // e.g. 268435456
 * ```
 */
export interface InfoReport {
  readonly adapter: { vendor: string; architecture: string; description: string; isFallbackAdapter: boolean };
  readonly features: string[];
  readonly limits: Record<string, number>;
}

/**
 * Collects the adapter identity, device features and negotiated limits.
 *
 * @example
 * ```ts
 * console.log(JSON.stringify(infoReport(await createNodeGpu()), null, 2));
 * ```
 */
export function infoReport(gpu: GpuContext): InfoReport {
  const limits: Record<string, number> = {};
  const all = gpu.limits as unknown as Record<string, unknown>;
  for (const name of NEGOTIATED_LIMITS) {
    const value = all[name];
    if (typeof value === 'number') limits[name] = value;
  }
  return { adapter: { ...gpu.adapter }, features: [...gpu.features].sort(), limits };
}

/**
 * Human-readable form of the report.
 *
 * @example
 * ```ts
 * console.log(formatInfo(infoReport(gpu)));
 * // adapter: google / swiftshader — SwiftShader Device (Subzero) (software fallback)
 * ```
 */
export function formatInfo(report: InfoReport): string {
  const { adapter } = report;
  const lines = [
    `adapter: ${adapter.vendor} / ${adapter.architecture} — ${adapter.description}${adapter.isFallbackAdapter ? ' (software fallback)' : ''}`,
    `features: ${report.features.join(', ')}`,
    'limits:',
    ...Object.entries(report.limits).map(([name, value]) => `  ${name}: ${value}`),
  ];
  return lines.join('\n');
}
