import { build } from 'esbuild';
await build({ bundle: true, format: 'esm', target: 'es2022', loader: { '.wgsl': 'text' }, platform: 'node', entryPoints: { prof: 'scratch/prof.ts' }, outdir: 'scratch/out', external: ['webgpu', 'playwright-core', 'redis', '@redis/*'], logLevel: 'warning' });
