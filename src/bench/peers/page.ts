// The peers benchmark page: SnapKV scoring and KIVI quantization, same data, three ways in one Chromium page:
// kvcompact's WebGPU kernels, gpu.js on WebGL2 (./gpujs.ts), and the plain-TS reference, compared by ./checks.ts;
// then decode attention against onnxruntime-web (./decode-page.ts) when the config lists decode contexts.
// Node drives it through `window.__peersRun(config)` (./index.ts); opened by hand, `?run&sizes=1024` runs it and
// prints (`&decode=1024,4096` adds the decode-attention rows).
import { scoreScratchBytes } from '../../compress/gpu-policies.js';
import { SnapKVPolicy } from '../../compress/policies/snapkv.js';
import { encodeBlock } from '../../format/block-codec.js';
import { roundToF16 } from '../../format/f16.js';
import { blockLayout, type BlockLayout, encodeBlockRef } from '../../format/layout.js';
import { createStorageBuffer, readBuffer } from '../../gpu/buffers.js';
import { GpuContext } from '../../gpu/context.js';
import type { PagedCacheBindings } from '../../kernels/cache/paged-attention.js';
import { CompactBlocksKernel, IDENTITY_INDEX_BASE, packCompactJobs } from '../../kernels/compress/compact-blocks.js';
import { randomFloats } from '../fixture.js';
import { median } from '../stats.js';
import { checkQuant, checkScores, quantFromBlocks, quantFromGpuJs } from './checks.js';
import { runDecodePage } from './decode-page.js';
import {
  PEERS_SHAPE as S,
  peerShape,
  type PeerCheck,
  type PeerImpl,
  type PeerOp,
  type PeerRow,
  type PeersConfig,
  type PeersPageResult,
  withKvcompactRatios,
} from './contract.js';
import {
  createGpuJs,
  createGpuJsQuantizer,
  createGpuJsScorer,
  type GpuJs,
  type GpuJsGlobal,
  type GpuJsKernel,
  type GpuJsTexture,
  type KernelConstants,
  upload,
} from './gpujs.js';

// ---- data -----------------------------------------------------------------------------------------------------

/** One size's inputs, dense, as the TS reference and gpu.js read them (values exactly representable in f16). */
interface PeerData {
  readonly n: number;
  /** [kvHeads][n][headDim] */
  readonly k: Float32Array;
  readonly v: Float32Array;
  /** [window][nHeads][headDim]: the queries of positions n − window .. n − 1. */
  readonly q: Float32Array;
  /** [kvHeads][n] positions 0..n−1 as floats (gpu.js inputs) and u32. */
  readonly kpos: Uint32Array;
  readonly qpos: Uint32Array;
}

function makeData(n: number): PeerData {
  const f16 = (x: Float32Array): Float32Array => x.map((value) => roundToF16(value * 2));
  const kpos = new Uint32Array(S.kvHeads * n).map((_, i) => i % n);
  const qpos = Uint32Array.from({ length: S.window }, (_, j) => n - S.window + j);
  return {
    n,
    k: f16(randomFloats(S.kvHeads * n * S.headDim, 11)),
    v: f16(randomFloats(S.kvHeads * n * S.headDim, 12)),
    q: randomFloats(S.window * S.nHeads * S.headDim, 13),
    kpos,
    qpos,
  };
}

function head(data: Float32Array | Uint32Array, kv: number, n: number, width: number): Float32Array {
  return Float32Array.from(data.subarray(kv * n * width, (kv + 1) * n * width));
}

// ---- timing ---------------------------------------------------------------------------------------------------

type Measured = Omit<PeerRow, 'ratioToKvcompact'>;

/** Runs `body` warmup + runs times; body returns its own timings per implementation (ms). */
async function timeRuns(
  config: PeersConfig,
  body: () => Promise<Partial<Record<PeerImpl, number>>> | Partial<Record<PeerImpl, number>>,
): Promise<Map<PeerImpl, number[]>> {
  const warmup = config.checkOnly ? 0 : config.warmup;
  const runs = config.checkOnly ? 0 : config.runs;
  for (let i = 0; i < warmup; i++) await body();
  const samples = new Map<PeerImpl, number[]>();
  for (let i = 0; i < runs; i++) {
    const times = await body();
    for (const [impl, ms] of Object.entries(times) as [PeerImpl, number][]) {
      samples.set(impl, [...(samples.get(impl) ?? []), ms]);
    }
  }
  return samples;
}

function rowsOf(op: PeerOp, n: number, samples: Map<PeerImpl, number[]>): Measured[] {
  const label = n >= 1024 && n % 1024 === 0 ? `${n / 1024}K` : String(n);
  return [...samples].map(([impl, list]) => ({
    name: `${op}/${impl}/${label}`,
    op,
    impl,
    context: n,
    shape: peerShape(op, n),
    ms: median(list),
    samples: list,
  }));
}

/** Lets the page breathe between long synchronous runs (gpu.js and the reference block the main thread). */
const tick = () => new Promise<void>((done) => setTimeout(done, 0));

// ---- kvcompact (WebGPU) ---------------------------------------------------------------------------------------

interface KvcompactCache {
  readonly bindings: PagedCacheBindings;
  readonly full: BlockLayout;
  readonly quant: BlockLayout;
  destroy(): void;
}

/** An f16 paged cache holding the data (block b of head kv at full block 1 + kv·blocks + b) and room for int4 copies. */
function buildCache(gpu: GpuContext, data: PeerData): KvcompactCache {
  const { n } = data;
  const shape = { headDim: S.headDim, blockSize: S.blockSize };
  const full = blockLayout('f16', shape);
  const quant = blockLayout(`int${S.bits}` as 'int4', shape, S.group);
  const blocks = n / S.blockSize;
  const fullWords = new Uint32Array((1 + S.kvHeads * blocks) * full.wordsPerBlock);
  const table = new Uint32Array(S.kvHeads * blocks);
  const width = S.blockSize * S.headDim;
  for (let kv = 0; kv < S.kvHeads; kv++) {
    for (let b = 0; b < blocks; b++) {
      const index = 1 + kv * blocks + b;
      const at = (kv * n + b * S.blockSize) * S.headDim;
      const words = encodeBlock(
        full,
        data.k.subarray(at, at + width),
        data.v.subarray(at, at + width),
        data.kpos.subarray(kv * n + b * S.blockSize, kv * n + (b + 1) * S.blockSize),
        S.blockSize,
      );
      fullWords.set(words, index * full.wordsPerBlock);
      table[kv * blocks + b] = encodeBlockRef('full', index);
    }
  }
  const bindings: PagedCacheBindings = {
    blockTable: createStorageBuffer(gpu, 'peers:table', table),
    contextLens: createStorageBuffer(gpu, 'peers:ctx', new Uint32Array(S.kvHeads).fill(n)),
    fullPool: createStorageBuffer(gpu, 'peers:full', fullWords),
    quantPool: createStorageBuffer(gpu, 'peers:quant', (1 + S.kvHeads * blocks) * quant.wordsPerBlock * 4),
    seqSlots: 1,
    maxBlocksPerHead: blocks,
  };
  return {
    bindings,
    full,
    quant,
    destroy() {
      for (const b of [bindings.blockTable, bindings.contextLens, bindings.fullPool, bindings.quantPool]) b.destroy();
    },
  };
}

// ---- one size -------------------------------------------------------------------------------------------------

async function runSize(
  gpu: GpuContext,
  gpujs: GpuJs,
  config: PeersConfig,
  n: number,
  kernelNames: Set<string>,
): Promise<{ rows: Measured[]; checks: PeerCheck[] }> {
  if (!Number.isInteger(n) || n < S.window || n % S.window !== 0) {
    throw new Error(`size ${n}: must be a positive multiple of the window (${S.window}) and of the block size`);
  }
  const data = makeData(n);
  const rows: Measured[] = [];
  const checks: PeerCheck[] = [];
  const cache = buildCache(gpu, data);
  const blocks = n / S.blockSize;
  const constants: KernelConstants = {
    n,
    nHeads: S.nHeads,
    kvHeads: S.kvHeads,
    group: S.nHeads / S.kvHeads,
    headDim: S.headDim,
    window: S.window,
    scale: 1 / Math.sqrt(S.headDim),
    radius: (S.kernelSize - 1) / 2,
    kernelSize: S.kernelSize,
    sinks: S.sinks,
    recentStart: n - S.window,
    quantGroup: S.group,
    tokenRows: S.kvHeads * n,
    levels: 2 ** S.bits - 1,
    codesPerFloat: 16 / S.bits,
    codeBase: 2 ** S.bits,
  };
  const uploads: { texture: GpuJsTexture; kernel: GpuJsKernel }[] = [];
  const resident = (values: Float32Array) => {
    const u = upload(gpujs, values);
    uploads.push(u);
    return u.texture;
  };
  const tq = resident(data.q);
  const tk = resident(data.k);
  const tv = resident(data.v);
  const tkpos = resident(Float32Array.from(data.kpos));
  const tqpos = resident(Float32Array.from(data.qpos));
  const scorer = createGpuJsScorer(gpujs, constants);
  const quantizer = createGpuJsQuantizer(gpujs, constants);
  try {
    // SnapKV scoring.
    const policy = new SnapKVPolicy({ window: S.window, kernelSize: S.kernelSize, pooling: 'avg', sinks: S.sinks });
    const refInput = {
      nHeads: S.nHeads,
      kvHeads: S.kvHeads,
      headDim: S.headDim,
      keys: Array.from({ length: S.kvHeads }, (_, kv) => head(data.k, kv, n, S.headDim)),
      positions: Array.from({ length: S.kvHeads }, (_, kv) => data.kpos.slice(kv * n, (kv + 1) * n)),
      windowQueries: data.q,
      windowPositions: data.qpos,
      sequenceLength: n,
    };
    const windowQ = new Float32Array(S.window * S.nHeads * S.headDim);
    const windowPos = new Uint32Array(S.window);
    data.qpos.forEach((pos, j) => {
      // Ring-indexed by position mod capacity, as the cache keeps its observation window.
      const ring = pos % S.window;
      windowQ.set(data.q.subarray(j * S.nHeads * S.headDim, (j + 1) * S.nHeads * S.headDim), ring * S.nHeads * S.headDim);
      windowPos[ring] = pos;
    });
    const queries = createStorageBuffer(gpu, 'peers:window-q', windowQ);
    const positions = createStorageBuffer(gpu, 'peers:window-pos', windowPos);
    const scratch = createStorageBuffer(gpu, 'peers:scratch', scoreScratchBytes(1, S.window, S.nHeads));
    const scores = createStorageBuffer(gpu, 'peers:scores', S.kvHeads * n * 4);
    const scoreInput = {
      gpu,
      cache: cache.bindings,
      full: cache.full,
      quant: cache.quant,
      nHeads: S.nHeads,
      kvHeads: S.kvHeads,
      layer: 0,
      slot: 0,
      seqLen: n,
      window: { queries, positions, capacity: S.window, valid: S.window },
      scratch,
      scores,
    };
    try {
      const kvcScore = async (): Promise<{ done: number; read: number; out: Float32Array }> => {
        const t0 = performance.now();
        const encoder = gpu.device.createCommandEncoder({ label: 'peers:snapkv' });
        policy.scoreGpu(encoder, scoreInput);
        gpu.submit([encoder.finish()]);
        await gpu.device.queue.onSubmittedWorkDone();
        const t1 = performance.now();
        const out = new Float32Array(await readBuffer(gpu, scores));
        return { done: t1 - t0, read: performance.now() - t0, out };
      };
      const ref = policy.score(refInput);
      const kvc = await gpu.withErrorScope(kvcScore);
      checks.push(checkScores(n, 'kvcompact-webgpu', (kv, t) => kvc.out[kv * n + t] ?? NaN, ref));
      const js = scorer.run(tq, tk, tkpos, tqpos);
      checks.push(checkScores(n, 'gpu.js-webgl2', (kv, t) => js[kv]?.[t] ?? NaN, ref));
      const samples = await timeRuns(config, async () => {
        const k = await kvcScore();
        await tick();
        let t0 = performance.now();
        scorer.run(tq, tk, tkpos, tqpos);
        const gpujsMs = performance.now() - t0;
        await tick();
        t0 = performance.now();
        policy.score(refInput);
        const refMs = performance.now() - t0;
        await tick();
        return {
          'kvcompact-webgpu': k.done,
          'kvcompact-webgpu+readback': k.read,
          'gpu.js-webgl2': gpujsMs,
          'ts-reference': refMs,
        };
      });
      rows.push(...rowsOf('snapkv-score', n, samples));
    } finally {
      for (const b of [queries, positions, scratch, scores]) b.destroy();
    }

    // KIVI quantization: every block of every head, f16 → int4 (kvcompact: compact_blocks into fresh blocks).
    const jobs = createStorageBuffer(
      gpu,
      'peers:jobs',
      packCompactJobs(
        Array.from({ length: S.kvHeads * blocks }, (_, i) => ({
          row: Math.floor(i / blocks),
          destEntry: encodeBlockRef('quant', 1 + i),
          count: S.blockSize,
          indexBase: IDENTITY_INDEX_BASE,
          identityStart: (i % blocks) * S.blockSize,
        })),
      ),
    );
    const indices = createStorageBuffer(gpu, 'peers:indices', 4);
    const compact = new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant });
    try {
      const kvcQuant = async (): Promise<{ done: number; read: number; words: Uint32Array }> => {
        const t0 = performance.now();
        const encoder = gpu.device.createCommandEncoder({ label: 'peers:kivi' });
        compact.encode(encoder, { cache: cache.bindings, jobs, numJobs: S.kvHeads * blocks, indices });
        gpu.submit([encoder.finish()]);
        await gpu.device.queue.onSubmittedWorkDone();
        const t1 = performance.now();
        const words = new Uint32Array(await readBuffer(gpu, cache.bindings.quantPool));
        return { done: t1 - t0, read: performance.now() - t0, words };
      };
      const refQuant = (): Uint32Array[] => {
        const width = S.blockSize * S.headDim;
        const out: Uint32Array[] = [];
        for (let kv = 0; kv < S.kvHeads; kv++) {
          for (let b = 0; b < blocks; b++) {
            const at = (kv * n + b * S.blockSize) * S.headDim;
            const pos = data.kpos.subarray(kv * n + b * S.blockSize, kv * n + (b + 1) * S.blockSize);
            const k = data.k.subarray(at, at + width);
            out.push(encodeBlock(cache.quant, k, data.v.subarray(at, at + width), pos, S.blockSize));
          }
        }
        return out;
      };
      const refBlocks = refQuant();
      const ref = quantFromBlocks(cache.quant, n, (kv, b) => refBlocks[kv * blocks + b] ?? new Uint32Array(0));
      const kvc = await gpu.withErrorScope(kvcQuant);
      const W = cache.quant.wordsPerBlock;
      const kvcResult = quantFromBlocks(cache.quant, n, (kv, b) =>
        kvc.words.subarray((1 + kv * blocks + b) * W, (2 + kv * blocks + b) * W),
      );
      checks.push(checkQuant(n, 'kvcompact-webgpu', kvcResult, ref));
      const jsq = quantizer.run(tk, tv);
      checks.push(checkQuant(n, 'gpu.js-webgl2', quantFromGpuJs(jsq, n), ref));
      const samples = await timeRuns(config, async () => {
        const k = await kvcQuant();
        await tick();
        let t0 = performance.now();
        quantizer.run(tk, tv);
        const gpujsMs = performance.now() - t0;
        await tick();
        t0 = performance.now();
        refQuant();
        const refMs = performance.now() - t0;
        await tick();
        return {
          'kvcompact-webgpu': k.done,
          'kvcompact-webgpu+readback': k.read,
          'gpu.js-webgl2': gpujsMs,
          'ts-reference': refMs,
        };
      });
      rows.push(...rowsOf('kivi-quantize', n, samples));
    } finally {
      jobs.destroy();
      indices.destroy();
    }
    for (const u of uploads) {
      const name = u.kernel.kernel?.constructor.name;
      if (name) kernelNames.add(name);
    }
  } finally {
    scorer.destroy();
    quantizer.destroy();
    for (const u of uploads) u.kernel.destroy();
    cache.destroy();
  }
  return { rows, checks };
}

// ---- page -----------------------------------------------------------------------------------------------------

function webglRenderer(): string {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return 'no WebGL2';
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
}

/** Runs the comparison at every size of `config` and returns rows (with ratios) and numerical checks. */
async function runPeersPage(config: PeersConfig): Promise<PeersPageResult> {
  const started = performance.now();
  const global = (window as unknown as { GPU?: GpuJsGlobal }).GPU;
  if (!global) throw new Error('gpu.js is not loaded: gpu-browser.min.js must be served next to page.html');
  const gpu = await GpuContext.fromNavigator();
  const gpujs = createGpuJs(global);
  try {
    if (gpujs.mode !== 'webgl2') throw new Error(`gpu.js runs on ${gpujs.mode}, not webgl2`);
    const rows: Measured[] = [];
    const checks: PeerCheck[] = [];
    const kernelNames = new Set<string>();
    for (const n of config.sizes) {
      const result = await runSize(gpu, gpujs, config, n, kernelNames);
      rows.push(...result.rows);
      checks.push(...result.checks);
    }
    const gpujsKernel = [...kernelNames].join(', ') || (config.sizes.length === 0 ? 'not run' : 'unknown');
    // gpu.js falls back to other backends silently; a comparison that did not run on WebGL2 is no comparison.
    if (config.sizes.length > 0 && gpujsKernel !== 'WebGL2Kernel') {
      throw new Error(`gpu.js kernels ran as ${gpujsKernel}, not WebGL2Kernel`);
    }
    const decodeContexts = config.decodeContexts ?? [];
    const decode =
      decodeContexts.length > 0
        ? await runDecodePage(
            gpu,
            {
              contexts: decodeContexts,
              warmup: config.checkOnly ? 0 : config.warmup,
              runs: config.checkOnly ? 0 : (config.decodeRuns ?? config.runs),
            },
            new URL('./ort/', location.href).href,
          )
        : undefined;
    return {
      ...(decode ? { decode } : {}),
      userAgent: navigator.userAgent,
      adapter: gpu.adapter,
      webgl: { renderer: webglRenderer(), gpujsKernel },
      rows: withKvcompactRatios(rows),
      checks,
      pageSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    await gpujs.destroy();
    await gpu.destroy();
  }
}

const target = window as unknown as {
  __peersRun?: (config: PeersConfig) => Promise<PeersPageResult>;
  __peersReady?: boolean;
};
target.__peersRun = runPeersPage;
target.__peersReady = true;

const params = new URLSearchParams(location.search);
const status = document.getElementById('status');
if (params.has('run')) {
  const sizes = (params.get('sizes') ?? '1024').split(',').map(Number);
  const decode = params.get('decode');
  const config: PeersConfig = {
    sizes,
    warmup: Number(params.get('warmup') ?? 1),
    runs: Number(params.get('runs') ?? 3),
    ...(decode ? { decodeContexts: decode.split(',').map(Number) } : {}),
  };
  if (status) status.textContent = `running ${sizes.join(', ')} tokens…`;
  runPeersPage(config).then(
    (result) => {
      if (status) status.textContent = JSON.stringify(result, null, 2);
    },
    (error: unknown) => {
      if (status) status.textContent = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    },
  );
}
