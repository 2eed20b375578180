// `kvcompact bench --only peers`: the flags that apply to it, then src/bench/peers/ runs the page in Chromium.
// Loaded on demand by ./bench.ts so the other suites never load playwright-core or esbuild.
import { formatPeersMarkdown, peersConfig, runPeers } from '../bench/peers/index.js';
import { UsageError } from '../errors.js';

/**
 * `kvcompact bench --only peers [--quick] [--json]`: prints the markdown table (or JSON) and returns 1 when an
 * implementation disagrees with the TS reference beyond its tolerance.
 *
 * @example
 * ```ts
 * process.exitCode = await benchPeersCommand({ quick: true });
 * ```
 */
export async function benchPeersCommand(options: { quick?: boolean; json?: boolean; plot?: string; adapter?: string }): Promise<number> {
  for (const flag of ['plot', 'adapter'] as const) {
    if (options[flag] !== undefined) throw new UsageError(`--${flag}`, 'does not apply to --only peers (it runs in Chromium)');
  }
  const report = await runPeers(peersConfig(options.quick ?? false), {
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatPeersMarkdown(report));
  const failed = report.checks.filter((c) => !c.pass);
  for (const c of failed) {
    process.stderr.write(`bench peers: ${c.impl} ${c.op} at ${c.context} tokens is outside the tolerance (${c.tolerance})\n`);
  }
  return failed.length > 0 ? 1 : 0;
}
