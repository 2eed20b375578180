// `kvcompact bench --only peers`: builds bench/peers/ into dist/bench-peers/ (its own esbuild step, so the
// library build is untouched), serves it from 127.0.0.1, runs it in headless Chromium through playwright-core and
// prints the rows. gpu.js and esbuild are development dependencies: both are loaded only here, at run time.
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import {
  formatPeersMarkdown,
  PEERS_NAME,
  type PeersConfig,
  type PeersPageResult,
  type PeersReport,
} from '../bench/cases/peers.js';
import { KvCompactError } from '../errors.js';
import { serveStatic } from '../node/static-server.js';

/** Debian's chromium unless KVCOMPACT_CHROMIUM says otherwise (Playwright never downloads a browser here). */
const CHROMIUM = process.env.KVCOMPACT_CHROMIUM ?? '/usr/bin/chromium';
/** Same flags as test/helpers/browser.ts: WebGPU on, SwiftShader where there is no GPU. */
const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--disable-quic', '--enable-features=Vulkan', '--use-angle=swiftshader'];

/**
 * Sizes and runs. kvcompact's SnapKV kernels take about 12 s at 1K tokens on SwiftShader (2 cores), so the full
 * run measures 256 and 1K tokens per KV head (warm-up 1, 3 timed runs) and `--quick` only 256; both stay under
 * two minutes there. `KVCOMPACT_PEERS_SIZES=1024,4096` picks other sizes (multiples of 32) on a real GPU.
 *
 * @example
 * ```ts
 * peersConfig(true); // { sizes: [256], warmup: 1, runs: 3 }
 * ```
 */
export function peersConfig(quick: boolean, env: string | undefined = process.env.KVCOMPACT_PEERS_SIZES): PeersConfig {
  const sizes = env
    ? env.split(',').map((size) => Number(size.trim()))
    : quick
      ? [PEERS_TEST_SIZE]
      : [PEERS_TEST_SIZE, 1024];
  const bad = sizes.find((n) => !Number.isInteger(n) || n < 32 || n % 32 !== 0);
  if (bad !== undefined) {
    throw new KvCompactError(`KVCOMPACT_PEERS_SIZES: sizes must be multiples of 32 (the window); got ${bad}`);
  }
  return { sizes, warmup: 1, runs: 3 };
}

/**
 * The smallest size (tokens per KV head): the `--quick` run and the numerical test use it.
 *
 * @example
 * ```ts
 * await runPeers({ sizes: [PEERS_TEST_SIZE], warmup: 0, runs: 0, checkOnly: true });
 * ```
 */
export const PEERS_TEST_SIZE = 256;

/** The repository root: the nearest directory above this file whose package.json is kvcompact's. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'kvcompact') {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new KvCompactError('bench peers: cannot find the kvcompact repository (package.json)');
    dir = parent;
  }
}

// A variable specifier keeps the CLI bundle from inlining esbuild (a development dependency with a native binary).
const ESBUILD = 'esbuild';

/**
 * Bundles bench/peers/peers.ts into `outDir` with peers.html and gpu.js's browser build next to it.
 *
 * @example
 * ```ts
 * const dir = await buildPeersPage(); // <repo>/dist/bench-peers
 * ```
 */
export async function buildPeersPage(outDir?: string): Promise<string> {
  const root = repoRoot();
  const out = resolve(outDir ?? join(root, 'dist', 'bench-peers'));
  const gpujs = join(root, 'node_modules', 'gpu.js', 'dist', 'gpu-browser.min.js');
  if (!existsSync(gpujs)) {
    throw new KvCompactError(`bench peers: ${gpujs} is missing; install the development dependencies (npm install)`);
  }
  const esbuild = (await import(ESBUILD)) as typeof import('esbuild');
  mkdirSync(out, { recursive: true });
  await esbuild.build({
    entryPoints: { peers: join(root, 'bench', 'peers', 'peers.ts') },
    outdir: out,
    bundle: true,
    format: 'esm',
    target: 'es2022',
    platform: 'browser',
    sourcemap: true,
    minify: false, // gpu.js parses its kernels' source text; keep it readable
    loader: { '.wgsl': 'text' },
    logLevel: 'warning',
  });
  copyFileSync(join(root, 'bench', 'peers', 'peers.html'), join(out, 'peers.html'));
  copyFileSync(gpujs, join(out, 'gpu-browser.min.js'));
  return out;
}

/**
 * Builds the page, runs it in headless Chromium and returns the report. Progress lines go to `log`.
 *
 * @example
 * ```ts
 * const report = await runPeers({ sizes: [1024], warmup: 0, runs: 1, checkOnly: true });
 * report.checks.every((c) => c.pass);
 * ```
 */
export async function runPeers(config: PeersConfig, options: { log?: (line: string) => void } = {}): Promise<PeersReport> {
  const started = performance.now();
  const log = options.log ?? (() => undefined);
  const dir = await buildPeersPage();
  const site = await serveStatic(dir);
  let browser: Browser | undefined;
  try {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    await page.goto(`${site.url}peers.html`);
    await page.waitForFunction(() => (window as { __peersReady?: boolean }).__peersReady === true, null, {
      timeout: 30_000,
    });
    log(`bench peers: running sizes ${config.sizes.join(', ')} in ${browser.version()}…`);
    let result: PeersPageResult;
    try {
      result = await page.evaluate(
        (c) =>
          (window as unknown as { __peersRun: (config: PeersConfig) => Promise<PeersPageResult> }).__peersRun(c),
        config,
      );
    } catch (error) {
      const detail = errors.length > 0 ? ` (page errors: ${errors.join('; ')})` : '';
      const message = error instanceof Error ? error.message : String(error);
      throw new KvCompactError(`bench peers: the page failed: ${message}${detail}`);
    }
    return {
      tool: 'kvcompact bench',
      suite: PEERS_NAME,
      date: new Date().toISOString(),
      config,
      ...result,
      totalSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    await browser?.close();
    await site.close();
  }
}

/**
 * `kvcompact bench --only peers [--quick] [--json]`: prints the markdown table (or JSON) and returns 1 when an
 * implementation disagrees with the TS reference beyond its tolerance.
 *
 * @example
 * ```ts
 * process.exitCode = await benchPeersCommand({ quick: true });
 * ```
 */
export async function benchPeersCommand(options: { quick?: boolean; json?: boolean }): Promise<number> {
  const report = await runPeers(peersConfig(options.quick ?? false), {
    log: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(options.json ? `${JSON.stringify(report, null, 2)}\n` : formatPeersMarkdown(report));
  const failed = report.checks.filter((c) => !c.pass);
  for (const c of failed) {
    process.stderr.write(
      `bench peers: ${c.impl} ${c.op} at ${c.context} tokens is outside the tolerance (${c.tolerance})\n`,
    );
  }
  return failed.length > 0 ? 1 : 0;
}
