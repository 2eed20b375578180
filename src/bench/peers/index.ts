// The peers benchmark's entry (`kvcompact bench --only peers`): bundles ./page.ts into dist/bench-peers/ with
// page.html and gpu.js's browser build (its own esbuild step, so it always runs the current source and the library
// build is untouched), runs it in headless Chromium through playwright-core and returns the report. The page is
// served by Playwright's request interception from the built directory: no port, no server. gpu.js and esbuild are
// development dependencies: both are loaded only here, at run time.
import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { KvCompactError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { PEERS_NAME, type PeersConfig, type PeersPageResult, type PeersReport } from './contract.js';
import { type DecodePageResult, type DecodePeersReport, withDecodeRatios } from './decode-contract.js';
import { decodeData, referenceDecode, runKvcompactDecode } from './decode.js';

export { formatPeersMarkdown, PEERS_NAME, type PeerCheck, type PeersConfig, type PeersReport } from './contract.js';
export type { DecodePeerCheck, DecodePeerRow, DecodePeersReport, DecodePeerSkip } from './decode-contract.js';

/** Debian's chromium unless KVCOMPACT_CHROMIUM says otherwise (Playwright never downloads a browser here). */
const CHROMIUM = process.env.KVCOMPACT_CHROMIUM ?? '/usr/bin/chromium';
/** Same flags as test/helpers/browser.ts: WebGPU on, SwiftShader where there is no GPU. */
const CHROMIUM_ARGS = ['--enable-unsafe-webgpu', '--disable-quic', '--enable-features=Vulkan', '--use-angle=swiftshader'];

/**
 * Sizes and runs. kvcompact's SnapKV kernels take about 12 s at 1K tokens on SwiftShader (2 cores), so the full
 * run measures 256 and 1K tokens per KV head (warm-up 1, 3 timed runs) and `--quick` only 256; both stay under
 * two minutes there. `KVCOMPACT_PEERS_SIZES=1024,4096` picks other sizes (multiples of 32) on a real GPU.
 * Decode attention (kvcompact vs onnxruntime-web) runs at 1K and 4K (`--quick`: 1K), 5 timed runs per row;
 * `KVCOMPACT_PEERS_DECODE_CONTEXTS=1024,16384` picks others (multiples of 16).
 *
 * @example
 * ```ts
 * peersConfig(true); // { sizes: [256], warmup: 1, runs: 3, decodeContexts: [1024], decodeRuns: 5 }
 * ```
 */
export function peersConfig(
  quick: boolean,
  env: string | undefined = process.env.KVCOMPACT_PEERS_SIZES,
  decodeEnv: string | undefined = process.env.KVCOMPACT_PEERS_DECODE_CONTEXTS,
): PeersConfig {
  const list = (text: string) => text.split(',').map((size) => Number(size.trim()));
  const sizes = env ? list(env) : quick ? [PEERS_TEST_SIZE] : [PEERS_TEST_SIZE, 1024];
  const bad = sizes.find((n) => !Number.isInteger(n) || n < 32 || n % 32 !== 0);
  if (bad !== undefined) {
    throw new KvCompactError(`KVCOMPACT_PEERS_SIZES: sizes must be multiples of 32 (the window); got ${bad}`);
  }
  const decodeContexts = decodeEnv ? list(decodeEnv) : quick ? [1024] : [1024, 4096];
  const badContext = decodeContexts.find((n) => !Number.isInteger(n) || n < 32 || n % 16 !== 0);
  if (badContext !== undefined) {
    throw new KvCompactError(
      `KVCOMPACT_PEERS_DECODE_CONTEXTS: contexts must be multiples of 16 (the block size), at least 32; got ${badContext}`,
    );
  }
  return { sizes, warmup: 1, runs: 3, decodeContexts, decodeRuns: 5 };
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
export async function runPeers(
  config: PeersConfig,
  options: { log?: (line: string) => void; nodeGpu?: GpuContext } = {},
): Promise<PeersReport> {
  const started = performance.now();
  const log = options.log ?? (() => undefined);
  const dir = await buildPeersPage();
  const ortDist = join(repoRoot(), 'node_modules', 'onnxruntime-web', 'dist');
  if ((config.decodeContexts ?? []).length > 0 && !existsSync(join(ortDist, 'ort.webgpu.min.mjs'))) {
    throw new KvCompactError(`bench peers: ${ortDist} has no ort.webgpu.min.mjs; install the development dependencies (npm install)`);
  }
  let browser: Browser | undefined;
  try {
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = await browser.newPage();
    await serveFrom(page, dir, { '/ort/': ortDist });
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
    const { decode: pageDecode, ...rest } = result;
    const decode = pageDecode ? await withNodeDecode(pageDecode, config, options.nodeGpu, log) : undefined;
    return {
      tool: 'kvcompact bench',
      suite: PEERS_NAME,
      date: new Date().toISOString(),
      config,
      ...rest,
      ...(decode ? { decode } : {}),
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

/** Content types the page's files need (module scripts must be JavaScript; WebAssembly streams need their own). */
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json',
};

/**
 * Answers the page's requests to PAGE_ORIGIN from the files in `dir`, and under each `mounts` prefix from its
 * directory (onnxruntime-web's dist files straight from node_modules), never outside them; 404 for anything else.
 * The same job as src/node/static-server.ts, by request interception: no port, and bench may not import node.
 */
async function serveFrom(page: Page, dir: string, mounts: Record<string, string> = {}): Promise<void> {
  const roots: [string, string][] = [
    ...Object.entries(mounts).map(([prefix, d]): [string, string] => [prefix, resolve(d)]),
    ['/', resolve(dir)],
  ];
  await page.route(`${PAGE_ORIGIN}**`, (route) => {
    const path = decodeURIComponent(new URL(route.request().url()).pathname);
    const [prefix, root] = roots.find(([p]) => path.startsWith(p)) ?? ['/', resolve(dir)];
    const file = resolve(root, `./${path.slice(prefix.length)}`);
    const inside = file.startsWith(`${root}${sep}`) && existsSync(file) && statSync(file).isFile();
    if (!inside) return route.fulfill({ status: 404, body: 'not found' });
    const type = TYPES[extname(file)];
    return route.fulfill({ path: file, ...(type ? { contentType: type } : {}) });
  });
}

/**
 * Adds the Node host's rows (kvcompact's paged and flash-decode kernels on Dawn, for the kernel Chromium cannot
 * bind) to the page's decode rows, then the ratios. Without a Node GPU, the page's rows alone.
 */
async function withNodeDecode(
  page: DecodePageResult,
  config: PeersConfig,
  gpu: GpuContext | undefined,
  log: (line: string) => void,
): Promise<DecodePeersReport> {
  const rows = [...page.rows];
  const checks = [...page.checks];
  const skipped = [...page.skipped];
  if (gpu) {
    const runs = config.checkOnly ? 0 : (config.decodeRuns ?? config.runs);
    const warmup = config.checkOnly ? 0 : config.warmup;
    for (const context of config.decodeContexts ?? []) {
      log(`bench peers: decode attention in Node at ${context} tokens…`);
      const data = decodeData(context);
      const ref = referenceDecode(data);
      for (const format of ['f16', 'f32'] as const) {
        const r = await runKvcompactDecode(gpu, data, format, ref, { host: 'node', warmup, runs });
        rows.push(...r.rows);
        checks.push(...r.checks);
        skipped.push(...r.skipped);
      }
    }
  }
  return { rows: withDecodeRatios(rows), checks, skipped, ort: page.ort };
}
