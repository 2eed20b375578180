// `kvcompact bench --only peers`: the flags that apply to it, then src/bench/peers/ runs the page in Chromium, and
// the decode-attention kernels Chromium cannot bind run here in Node on Dawn (same data, same cases).
// Loaded on demand by ./bench.ts so the other suites never load playwright-core or esbuild.
import { formatPeersMarkdown, peersConfig, runPeers } from '../bench/peers/index.js';
import { UsageError } from '../errors.js';
import { createNodeGpu, parseAdapterChoice } from '../node/gpu.js';

/**
 * `kvcompact bench --only peers [--quick] [--json] [--adapter …]`: prints the markdown table (or JSON) and returns 1 when an
 * implementation disagrees with the TS reference beyond its tolerance.
 *
 * @example
 * ```ts
 * process.exitCode = await benchPeersCommand({ quick: true });
 * ```
 */
export async function benchPeersCommand(options: { quick?: boolean; json?: boolean; plot?: string; adapter?: string }): Promise<number> {
  if (options.plot !== undefined) throw new UsageError('--plot', 'does not apply to --only peers (it runs in Chromium)');
  const log = (line: string) => process.stderr.write(`${line}\n`);
  // --adapter picks the Node host's adapter (the decode kernels Chromium cannot bind); Chromium picks its own.
  const adapter = options.adapter === undefined ? {} : { adapter: parseAdapterChoice(options.adapter, '--adapter') };
  const nodeGpu = await createNodeGpu({ ...adapter, onAdapterChosen: log });
  try {
    const report = await runPeers(peersConfig(options.quick ?? false), { log, nodeGpu });
    process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatPeersMarkdown(report));
    const failed = report.checks.filter((c) => !c.pass);
    for (const c of failed) {
      process.stderr.write(`bench peers: ${c.impl} ${c.op} at ${c.context} tokens is outside the tolerance (${c.tolerance})\n`);
    }
    const failedDecode = report.decode?.checks.filter((c) => !c.pass) ?? [];
    for (const c of failedDecode) {
      process.stderr.write(`bench peers: ${c.engine} ${c.case} (${c.host}) is outside the tolerance (${c.tolerance})\n`);
    }
    return failed.length + failedDecode.length > 0 ? 1 : 0;
  } finally {
    await nodeGpu.destroy();
  }
}
