import { describe, expect, it } from 'vitest';
import type { BlockFormat } from '../src/format/layout.js';
import { logitScratchBytes, scoreScratchBytes, type ScoreGpuInput } from '../src/compress/gpu-policies.js';
import type { ScoreInput } from '../src/compress/policy.js';
import { createPolicy, policyNames, type AnyPolicyOptions } from '../src/compress/registry.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { AccumulateAttentionKernel, attentionSegments } from '../src/kernels/cache/accumulate-attention.js';
import { PagedAttentionKernel } from '../src/kernels/cache/paged-attention.js';
import { decodeAttention, prefillAttention } from '../src/attention/reference-attention.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { buildPagedFixture, type PagedFixture } from './helpers/paged-fixture.js';

// Relative tolerance per policy. Probability-based scores: f32 logits, exp and sums against the f64 reference.
// random, streaming and kvcompress are exact (bit-identical draws, positions, a copy); knorm and h2o are one
// f32 sqrt / division away from the reference.
const RELATIVE: Readonly<Record<string, number>> = { random: 0, streaming: 0, kvcompress: 0, knorm: 1e-6, h2o: 1e-6 };
const PROBABILITY_RELATIVE = 1e-5;
// The window kernels' first dispatch at a new shape compiles for seconds of CPU on SwiftShader (register-blocked,
// unrolled per head dimension); on 2 cores shared with other test runs that has taken 90 s of wall clock.
const WINDOW_TEST_TIMEOUT_MS = 300_000;
const SENTINEL = -12345;

interface Case {
  name: string;
  headDim: number;
  group: number;
  full: 'f32' | 'f16';
  quant: BlockFormat;
  quantBlocks: number;
  /** [slot][kvHead] token counts: awkward sizes, heads of different lengths. */
  lengths: number[][];
  /** Layer range scored; the fixture fills layer 1 of 2. */
  layer: number;
  layerCount: number;
  options: AnyPolicyOptions;
  /** Observation-window ring size and valid queries (default 6 and 5). */
  window?: { capacity: number; valid: number };
}

const CASES: Case[] = [
  {
    name: 'hd8 group1 f32+int4',
    headDim: 8,
    group: 1,
    full: 'f32',
    quant: 'int4',
    quantBlocks: 1,
    lengths: [
      [1, 15],
      [17, 63],
    ],
    layer: 1,
    layerCount: 1,
    options: { sinks: 2, recent: 3, window: 4, kernelSize: 5, pooling: 'avg', seed: 11 },
  },
  {
    name: 'hd64 group4 f16+int8',
    headDim: 64,
    group: 4,
    full: 'f16',
    quant: 'int8',
    quantBlocks: 2,
    lengths: [
      [65, 17],
      [63, 1],
    ],
    layer: 0,
    layerCount: 2,
    options: { sinks: 0, recent: 0, window: 8, kernelSize: 7, pooling: 'max', seed: 0xdeadbeef },
  },
  {
    name: 'hd8 group2 f32+int2',
    headDim: 8,
    group: 2,
    full: 'f32',
    quant: 'int2',
    quantBlocks: 2,
    lengths: [
      [63, 65],
      [15, 17],
    ],
    layer: 1,
    layerCount: 1,
    options: { sinks: 4, recent: 8, window: 3, kernelSize: 7, pooling: 'avg', seed: 3 },
  },
  {
    // A head dimension that is not a multiple of 4: the window kernels' vec4 channels are zero-padded.
    name: 'hd6 group2 f16+int8',
    headDim: 6,
    group: 2,
    full: 'f16',
    quant: 'int8',
    quantBlocks: 1,
    lengths: [
      [1, 65],
      [33, 4],
    ],
    layer: 1,
    layerCount: 1,
    options: { sinks: 1, recent: 2, window: 5, kernelSize: 3, pooling: 'max', seed: 5 },
  },
  {
    // The window policies' shapes at awkward sizes: 4097 keys (past every partition and key block), a full
    // window of 32 queries, GQA group 4 (TOVA runs the same kernels with a window of 1).
    name: 'hd8 group4 f16+int8, 4097 keys, window 32',
    headDim: 8,
    group: 4,
    full: 'f16',
    quant: 'int8',
    quantBlocks: 3,
    lengths: [
      [4097, 1],
      [65, 63],
    ],
    layer: 1,
    layerCount: 1,
    options: { sinks: 4, recent: 32, window: 32, kernelSize: 5, pooling: 'avg', seed: 7 },
    window: { capacity: 32, valid: 32 },
  },
  {
    // SnapKV with a window of one query, GQA group 1, 4097 keys in f32.
    name: 'hd12 group1 f32+int4, 4097 keys, window 1',
    headDim: 12,
    group: 1,
    full: 'f32',
    quant: 'int4',
    quantBlocks: 2,
    lengths: [
      [63, 4097],
      [1, 65],
    ],
    layer: 1,
    layerCount: 1,
    options: { sinks: 0, recent: 1, window: 1, kernelSize: 7, pooling: 'max', seed: 9 },
    window: { capacity: 4, valid: 3 },
  },
];

const KV_HEADS = 2;
const LAYERS = 2;
const DATA_LAYER = 1;
const BLOCK_SIZE = 16;
const WINDOW = { capacity: 6, valid: 5 };

/** A fixture plus every GPU buffer the policies read, and the matching CPU inputs per slot. */
interface Setup {
  fixture: PagedFixture;
  nHeads: number;
  maxTokens: number;
  rows: number;
  stats: { attnSum: Float32Array; attnSqSum: Float32Array; attnCount: Float32Array };
  gpuStats: { attnSum: GPUBuffer; attnSqSum: GPUBuffer; attnCount: GPUBuffer };
  windowQueries: GPUBuffer;
  windowPositions: GPUBuffer;
  scratch: GPUBuffer;
  /** Room for stored logits (runs that pass it take the stored-logits kernels). */
  logits: GPUBuffer;
  scores: GPUBuffer;
  /** Per slot: the reference's input (layer DATA_LAYER). */
  cpu: ScoreInput[];
  seqLens: number[];
}

const setups = new Map<string, Promise<Setup>>();

function setupFor(gpu: GpuContext, c: Case): Promise<Setup> {
  let setup = setups.get(c.name);
  if (!setup) {
    setup = Promise.resolve(buildSetup(gpu, c));
    setups.set(c.name, setup);
  }
  return setup;
}

function buildSetup(gpu: GpuContext, c: Case): Setup {
  const nHeads = KV_HEADS * c.group;
  const { capacity: WINDOW_CAPACITY, valid: WINDOW_VALID } = c.window ?? WINDOW;
  const { headDim } = c;
  const fixture = buildPagedFixture(gpu, {
    headDim,
    blockSize: BLOCK_SIZE,
    kvHeads: KV_HEADS,
    lengths: c.lengths,
    fullFormat: c.full,
    quantFormat: c.quant,
    quantBlocks: c.quantBlocks,
    seed: headDim * 31 + c.group,
    layers: LAYERS,
    layer: DATA_LAYER,
  });
  const seqSlots = c.lengths.length;
  const maxTokens = fixture.bindings.maxBlocksPerHead * BLOCK_SIZE;
  const rows = LAYERS * seqSlots * KV_HEADS;
  const random = seededRandom(headDim + c.group * 1000);
  // Statistics as after some decode steps: counts are small integers, some 0 (h2o must then score 0).
  const attnSum = Float32Array.from({ length: rows * maxTokens }, () => random() * 3);
  const attnSqSum = Float32Array.from({ length: rows * maxTokens }, () => random());
  const attnCount = Float32Array.from({ length: rows * maxTokens }, () => Math.floor(random() * 4));
  const ring = LAYERS * seqSlots * WINDOW_CAPACITY;
  const windowQ = Float32Array.from({ length: ring * nHeads * headDim }, () => random() * 2 - 1);
  const windowPos = new Uint32Array(ring).fill(0xffff_ffff);
  const cpu: ScoreInput[] = [];
  const seqLens: number[] = [];
  for (let slot = 0; slot < seqSlots; slot++) {
    const positions = fixture.positions[slot] ?? [];
    const seqLen = Math.max(...positions.map((p) => p[p.length - 1] ?? 0)) + 1;
    seqLens.push(seqLen);
    const valid = Math.min(WINDOW_VALID, seqLen);
    const queries = new Float32Array(valid * nHeads * headDim);
    const qPositions = new Uint32Array(valid);
    for (let j = 0; j < valid; j++) {
      const position = seqLen - valid + j;
      const at = (DATA_LAYER * seqSlots + slot) * WINDOW_CAPACITY + (position % WINDOW_CAPACITY);
      windowPos[at] = position;
      qPositions[j] = position;
      queries.set(windowQ.subarray(at * nHeads * headDim, (at + 1) * nHeads * headDim), j * nHeads * headDim);
    }
    const statRows = (stat: Float32Array) =>
      Array.from({ length: KV_HEADS }, (_, kv) => {
        const row = (DATA_LAYER * seqSlots + slot) * KV_HEADS + kv;
        return stat.slice(row * maxTokens, row * maxTokens + (c.lengths[slot]?.[kv] ?? 0));
      });
    cpu.push({
      nHeads,
      kvHeads: KV_HEADS,
      headDim,
      keys: fixture.keys[slot] ?? [],
      positions,
      windowQueries: queries,
      windowPositions: qPositions,
      attnSum: statRows(attnSum),
      attnSqSum: statRows(attnSqSum),
      attnCount: statRows(attnCount),
      sequenceLength: seqLen,
      layer: DATA_LAYER,
    });
  }
  return {
    fixture,
    nHeads,
    maxTokens,
    rows,
    stats: { attnSum, attnSqSum, attnCount },
    gpuStats: {
      attnSum: createStorageBuffer(gpu, 'attn-sum', attnSum),
      attnSqSum: createStorageBuffer(gpu, 'attn-sq-sum', attnSqSum),
      attnCount: createStorageBuffer(gpu, 'attn-count', attnCount),
    },
    windowQueries: createStorageBuffer(gpu, 'window-q', windowQ),
    windowPositions: createStorageBuffer(gpu, 'window-pos', windowPos),
    // Room for a partition per token: the tiled runs below split the heads into partitions of a few tokens.
    scratch: createStorageBuffer(gpu, 'scratch', scoreScratchBytes(LAYERS, WINDOW_CAPACITY, nHeads, maxTokens)),
    logits: createStorageBuffer(gpu, 'logits', logitScratchBytes(LAYERS, WINDOW_CAPACITY, nHeads, maxTokens)),
    scores: createStorageBuffer(gpu, 'scores', rows * maxTokens * 4),
    cpu,
    seqLens,
  };
}

/** The GPU scoring input of one slot of a case (statistics, window, scratch); runs add tiling or logits. */
function scoreInput(gpu: GpuContext, setup: Setup, c: Case, slot: number): ScoreGpuInput {
  const seqLen = setup.seqLens[slot] ?? 0;
  const window = c.window ?? WINDOW;
  return {
    gpu,
    cache: setup.fixture.bindings,
    full: setup.fixture.full,
    quant: setup.fixture.quant,
    nHeads: setup.nHeads,
    kvHeads: KV_HEADS,
    layer: c.layer,
    layerCount: c.layerCount,
    slot,
    seqLen,
    stats: setup.gpuStats,
    window: { queries: setup.windowQueries, positions: setup.windowPositions, capacity: window.capacity, valid: Math.min(window.valid, seqLen) },
    scratch: setup.scratch,
    scores: setup.scores,
  };
}

function close(got: number, want: number, relative: number): boolean {
  if (want === Infinity || got === Infinity) return got === want;
  return Math.abs(got - want) <= relative * Math.abs(want);
}

describe('GPU scoring matches the TS policies on the same decoded cache', () => {
  const table = CASES.flatMap((c) => policyNames().map((policy) => ({ policy, c, label: c.name })));

  // Window policies again with small workgroups, partitions and tiles: several partitions merged per query, key
  // and query tiles that do not divide the sizes, a pooling halo across workgroups (lengths 1, 15, 17, 63, 65).
  const tilings = [
    { workgroupSize: 16, partitionTokens: 7, keyTile: 3, queryTile: 5 },
    { workgroupSize: 32, partitionTokens: 16, keyTile: 1, queryTile: 1 },
  ];
  // And with the logits pass 1 stores for pass 2 (default tiling and the first small one).
  const windowTable = CASES.flatMap((c) =>
    ['snapkv', 'tova'].flatMap((policy) => [
      ...tilings.map((tiling) => ({ policy, c, label: c.name, tiling, tile: JSON.stringify(tiling), stored: false })),
      { policy, c, label: c.name, tiling: undefined, tile: 'default tiling, stored logits', stored: true },
      { policy, c, label: c.name, tiling: tilings[0], tile: `${JSON.stringify(tilings[0])}, stored logits`, stored: true },
    ]),
  );
  it.each([...table.map((row) => ({ ...row, tiling: undefined, tile: 'default tiling', stored: false })), ...windowTable])('$policy on $label, $tile', async ({ policy: name, c, tiling, stored }) => {
    const gpu = await testGpu();
    const setup = await setupFor(gpu, c);
    const policy = createPolicy(name, c.options);
    if (!policy.scoreGpu) throw new Error(`registry policy ${name} has no scoreGpu`);
    const seqSlots = c.lengths.length;
    const relative = RELATIVE[name] ?? PROBABILITY_RELATIVE;
    for (let slot = 0; slot < seqSlots; slot++) {
      gpu.device.queue.writeBuffer(setup.scores, 0, new Float32Array(setup.rows * setup.maxTokens).fill(SENTINEL));
      const input: ScoreGpuInput = {
        ...scoreInput(gpu, setup, c, slot),
        ...(tiling ? { tiling } : {}),
        ...(stored ? { logits: setup.logits } : {}),
      };
      await gpu.withErrorScope(() => {
        const encoder = gpu.device.createCommandEncoder();
        policy.scoreGpu?.(encoder, input);
        gpu.submit([encoder.finish()]);
      });
      const got = new Float32Array(await readBuffer(gpu, setup.scores));
      const want = policy.score({ ...(setup.cpu[slot] as ScoreInput), seed: c.options.seed ?? 0 });
      for (let kv = 0; kv < KV_HEADS; kv++) {
        const row = (DATA_LAYER * seqSlots + slot) * KV_HEADS + kv;
        const ref = want[kv] ?? new Float32Array();
        const gpuRow = got.subarray(row * setup.maxTokens, (row + 1) * setup.maxTokens);
        const bad: string[] = [];
        for (let t = 0; t < ref.length; t++) {
          const g = gpuRow[t] ?? NaN;
          const r = ref[t] ?? NaN;
          if (!close(g, r, relative)) bad.push(`t=${t}: gpu ${g} ref ${r}`);
        }
        expect(bad.slice(0, 5), `slot ${slot} kv ${kv}`).toEqual([]);
        // tokens past the head's length are not the policy's to write
        for (let t = ref.length; t < setup.maxTokens; t++) expect(gpuRow[t]).toBe(SENTINEL);
        // nor are other slots' rows
        const other = ((DATA_LAYER * seqSlots + ((slot + 1) % seqSlots)) * KV_HEADS + kv) * setup.maxTokens;
        expect(got[other]).toBe(SENTINEL);
      }
    }
  }, WINDOW_TEST_TIMEOUT_MS);

  it('stored logits give the recomputed scores bit for bit, and are really stored', async () => {
    const gpu = await testGpu();
    const c = CASES[4] as Case; // 4097 keys, window 32, group 4
    const setup = await setupFor(gpu, c);
    const logits = createStorageBuffer(gpu, 'logits-fresh', setup.logits.size);
    const run = async (stored: boolean): Promise<Float32Array> => {
      const input: ScoreGpuInput = { ...scoreInput(gpu, setup, c, 0), ...(stored ? { logits } : {}) };
      await gpu.withErrorScope(() => {
        const encoder = gpu.device.createCommandEncoder();
        createPolicy('snapkv').scoreGpu?.(encoder, input);
        gpu.submit([encoder.finish()]);
      });
      return new Float32Array(await readBuffer(gpu, setup.scores));
    };
    const recomputed = await run(false);
    const stored = await run(true);
    expect(stored).toEqual(recomputed);
    const held = new Float32Array(await readBuffer(gpu, logits));
    expect(held.some((v) => v !== 0 && v > -1e30)).toBe(true); // real logits
    expect(held.some((v) => v < -1e30)).toBe(true); // masked: keys after a window query
    logits.destroy();
  }, WINDOW_TEST_TIMEOUT_MS);

  it('window policies say what they miss', async () => {
    const gpu = await testGpu();
    const setup = await setupFor(gpu, CASES[0] as Case);
    const encoder = gpu.device.createCommandEncoder();
    const base: ScoreGpuInput = {
      gpu,
      cache: setup.fixture.bindings,
      full: setup.fixture.full,
      quant: setup.fixture.quant,
      nHeads: setup.nHeads,
      kvHeads: KV_HEADS,
      layer: DATA_LAYER,
      slot: 0,
      seqLen: setup.seqLens[0] ?? 0,
      scores: setup.scores,
    };
    expect(() => createPolicy('snapkv').scoreGpu?.(encoder, base)).toThrow(/observation-window/);
    expect(() => createPolicy('h2o').scoreGpu?.(encoder, base)).toThrow(/statistics/);
    encoder.finish();
  });
});

describe('accumulate_attention', () => {
  it('segments group a batch by slot and refuse a slot split in two runs', () => {
    expect([...attentionSegments([0, 0, 0, 2, 1])]).toEqual([0, 0, 3, 2, 3, 1, 1, 4, 1]);
    expect(() => attentionSegments([0, 1, 0])).toThrow(/two separate runs/);
  });

  it('adds Σp, Σp² and visible counts of decode steps and a causal chunk, as the reference', async () => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const group = 2;
    const nHeads = kvHeads * group;
    const headDim = 8;
    const lengths = [
      [17, 63],
      [65, 1],
    ];
    const fixture = buildPagedFixture(gpu, {
      headDim,
      blockSize: BLOCK_SIZE,
      kvHeads,
      lengths,
      fullFormat: 'f16',
      quantFormat: 'int4',
      quantBlocks: 1,
      seed: 77,
    });
    const maxTokens = fixture.bindings.maxBlocksPerHead * BLOCK_SIZE;
    const rows = 2 * kvHeads;
    const stats = {
      attnSum: createStorageBuffer(gpu, 'attn-sum', rows * maxTokens * 4),
      attnSqSum: createStorageBuffer(gpu, 'attn-sq-sum', rows * maxTokens * 4),
      attnCount: createStorageBuffer(gpu, 'attn-count', rows * maxTokens * 4),
    };
    const want = {
      sum: Array.from({ length: rows }, () => new Float64Array(maxTokens)),
      sq: Array.from({ length: rows }, () => new Float64Array(maxTokens)),
      count: Array.from({ length: rows }, () => new Float64Array(maxTokens)),
    };
    const probsStride = 65;
    const attention = new PagedAttentionKernel(gpu, { nHeads, kvHeads, full: fixture.full, quant: fixture.quant });
    const accumulate = new AccumulateAttentionKernel(gpu, { nHeads, kvHeads, full: fixture.full, quant: fixture.quant });
    const random = seededRandom(9);
    // 3 decode steps (one query per slot, sees everything), then a chunk: 3 queries of slot 0, 2 of slot 1, causal.
    const lastPos = (slot: number) => Math.max(...(fixture.positions[slot] ?? []).map((p) => p[p.length - 1] ?? 0));
    const steps: { slots: number[]; positions: number[] }[] = [
      { slots: [0, 1], positions: [0xffff_ffff, 0xffff_ffff] },
      { slots: [0, 1], positions: [0xffff_ffff, 0xffff_ffff] },
      { slots: [0, 1], positions: [0xffff_ffff, 0xffff_ffff] },
      { slots: [0, 0, 0, 1, 1], positions: [3, 20, lastPos(0), 40, lastPos(1) + 5] },
    ];
    const buffers: GPUBuffer[] = [...Object.values(stats)];
    for (const step of steps) {
      const n = step.slots.length;
      const q = Float32Array.from({ length: n * nHeads * headDim }, () => random() * 2 - 1);
      const segments = attentionSegments(step.slots);
      const queries = createStorageBuffer(gpu, 'q', q);
      const slots = createStorageBuffer(gpu, 'slots', Uint32Array.from(step.slots));
      const positions = createStorageBuffer(gpu, 'pos', Uint32Array.from(step.positions));
      const out = createStorageBuffer(gpu, 'out', q.byteLength);
      const probs = createStorageBuffer(gpu, 'probs', n * nHeads * probsStride * 4);
      const segmentBuffer = createStorageBuffer(gpu, 'segments', segments);
      buffers.push(queries, slots, positions, out, probs, segmentBuffer);
      await gpu.withErrorScope(() => {
        const encoder = gpu.device.createCommandEncoder();
        attention.encode(encoder, {
          cache: fixture.bindings,
          layer: 0,
          numQueries: n,
          queries,
          querySlots: slots,
          queryPositions: positions,
          out,
          probs,
          probsStride,
        });
        accumulate.encode(encoder, {
          cache: fixture.bindings,
          layer: 0,
          probs,
          probsStride,
          queryPositions: positions,
          segments: segmentBuffer,
          numSegments: segments.length / 3,
          stats,
        });
        gpu.submit([encoder.finish()]);
      });
      for (let s = 0; s < 3 * (segments.length / 3); s += 3) {
        const slot = segments[s] ?? 0;
        const first = segments[s + 1] ?? 0;
        const count = segments[s + 2] ?? 0;
        const qs = q.subarray(first * nHeads * headDim, (first + count) * nHeads * headDim);
        const qPositions = Uint32Array.from(step.positions.slice(first, first + count));
        const common = { keys: fixture.keys[slot] ?? [], values: fixture.values[slot] ?? [], nHeads, kvHeads, headDim };
        const ref =
          count === 1 && qPositions[0] === 0xffff_ffff
            ? { ...decodeAttention({ ...common, q: qs }), visibleCount: undefined }
            : prefillAttention({ ...common, q: qs, queryPositions: qPositions, keyPositions: fixture.positions[slot] ?? [] });
        for (let kv = 0; kv < kvHeads; kv++) {
          const row = slot * kvHeads + kv;
          const len = lengths[slot]?.[kv] ?? 0;
          const [sum, sq, count] = [want.sum[row], want.sq[row], want.count[row]];
          if (!sum || !sq || !count) throw new Error('row out of range');
          for (let t = 0; t < len; t++) {
            sum[t] = (sum[t] ?? 0) + (ref.probsPerKvHead[kv]?.[t] ?? 0);
            sq[t] = (sq[t] ?? 0) + (ref.sqProbsPerKvHead[kv]?.[t] ?? 0);
            count[t] = (count[t] ?? 0) + (ref.visibleCount ? (ref.visibleCount[kv]?.[t] ?? 0) : 1);
          }
        }
      }
    }
    const got = {
      sum: new Float32Array(await readBuffer(gpu, stats.attnSum)),
      sq: new Float32Array(await readBuffer(gpu, stats.attnSqSum)),
      count: new Float32Array(await readBuffer(gpu, stats.attnCount)),
    };
    let maxSumErr = 0;
    let maxSqErr = 0;
    let countMismatch = 0;
    let hiddenSeen = 0;
    for (let row = 0; row < rows; row++) {
      for (let t = 0; t < maxTokens; t++) {
        const i = row * maxTokens + t;
        maxSumErr = Math.max(maxSumErr, Math.abs((got.sum[i] ?? 0) - (want.sum[row]?.[t] ?? 0)));
        maxSqErr = Math.max(maxSqErr, Math.abs((got.sq[i] ?? 0) - (want.sq[row]?.[t] ?? 0)));
        if (got.count[i] !== want.count[row]?.[t]) countMismatch++;
        if ((want.count[row]?.[t] ?? 0) < steps.length - 1) hiddenSeen++;
      }
    }
    // Σ of 4 steps of probabilities, each within ~1e-6 of the f64 reference (as the attention test states).
    expect(maxSumErr).toBeLessThan(1e-5);
    expect(maxSqErr).toBeLessThan(1e-5);
    expect(countMismatch).toBe(0);
    expect(hiddenSeen).toBeGreaterThan(0); // the chunk really masked some tokens
    fixture.destroy();
    for (const b of buffers) b.destroy();
  });
});
