// The peers benchmark's entry (`kvcompact bench --only peers`): bundles ./page.ts into dist/bench-peers/ with
// page.html and gpu.js's browser build (its own esbuild step, so it always runs the current source and the library
// build is untouched), runs it in headless Chromium through playwright-core and returns the report. The page is
// served by Playwright's request interception from the built directory: no port, no server. gpu.js and esbuild are
// development dependencies: both are loaded only here, at run time.
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { KvCompactError } from '../../errors.js';
import { PEERS_NAME, type PeersConfig, type PeersPageResult, type PeersReport } from './contract.js';

export { formatPeersMarkdown, PEERS_NAME, type PeerCheck, type PeersConfig, type PeersReport } from './contract.js';

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

/** Where the page's source lives in the repository (the CLI bundle runs from dist/, so not beside this module). */
function pageSource(root: string): string {
  return join(root, 'src', 'bench', 'peers');
}

// A variable specifier keeps the CLI bundle from inlining esbuild (a development dependency with a native binary).
const ESBUILD = 'esbuild';

/**
 * Bundles ./page.ts into `outDir` with page.html and gpu.js's browser build next to it; returns `outDir`.
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
    entryPoints: { page: join(pageSource(root), 'page.ts') },
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
  copyFileSync(join(pageSource(root), 'page.html'), join(out, 'page.html'));
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
  let browser: Browser | undefined;
  try {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = await browser.newPage();
    await serveFrom(page, dir);
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    await page.goto(`${PAGE_ORIGIN}page.html`);
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
  }
}

/**
 * The page's origin. Requests to it never reach the network (serveFrom answers them); a `.localhost` host keeps
 * the page a secure context, which WebGPU requires.
 */
const PAGE_ORIGIN = 'http://kvcompact-peers.localhost/';

/** Answers the page's requests to PAGE_ORIGIN from the files in `dir` (never outside it), 404 for anything else. */
async function serveFrom(page: Page, dir: string): Promise<void> {
  const root = resolve(dir);
  await page.route(`${PAGE_ORIGIN}**`, (route) => {
    const file = resolve(root, `.${decodeURIComponent(new URL(route.request().url()).pathname)}`);
    const inside = file.startsWith(`${root}${sep}`) && existsSync(file) && statSync(file).isFile();
    return inside ? route.fulfill({ path: file }) : route.fulfill({ status: 404, body: 'not found' });
  });
}

