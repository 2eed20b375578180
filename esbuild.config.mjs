// Builds the library (browser-safe core and Node entry), the CLI and the demo pages. WGSL is imported as text.
// Not here: the peers benchmark page (src/bench/peers/page.ts), which `kvcompact bench --only peers` bundles
// itself into dist/bench-peers/ each run (src/bench/peers/index.ts), so it always runs the current source.
import { build } from 'esbuild';
import { cpSync, mkdirSync } from 'node:fs';

const common = {
  bundle: true,
  format: 'esm',
  target: 'es2022',
  sourcemap: true,
  loader: { '.wgsl': 'text' },
  logLevel: 'warning',
};

await Promise.all([
  build({ ...common, entryPoints: { index: 'src/index.ts' }, outdir: 'dist', platform: 'neutral' }),
  build({
    ...common,
    entryPoints: { node: 'src/node.ts', cli: 'src/cli/main.ts' },
    outdir: 'dist',
    platform: 'node',
    external: ['webgpu', 'playwright-core', 'redis', '@redis/*'],
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
  }),
  build({
    ...common,
    entryPoints: { smoke: 'demo/src/smoke.ts', main: 'demo/src/main.ts' },
    outdir: 'dist/demo',
    platform: 'browser',
    minify: false,
  }),
]);
mkdirSync('dist/demo', { recursive: true });
cpSync('demo/static', 'dist/demo', { recursive: true });
