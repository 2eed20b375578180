import { PagedKvCache } from '../../engine/paged-kv-cache.js';
import type { GpuContext } from '../../gpu/context.js';
import type { WeightPrecision } from '../../kernels/model/matvec.js';
import { parseCheckpoint, type LlamaCheckpoint } from '../../model/checkpoint.js';
import { GpuLlama, gpuWeightBytes } from '../../model/gpu-llama.js';
import type { BenchCase, BenchSuite, PreparedCase, SkippedCase } from '../harness.js';

/** Tokens each sequence is prefilled with before decode steps are timed. */
const PROMPT = 16;
/** A sequence is restarted (untimed) before its position passes this, so every sample decodes at 16..PROMPT+… */
const RESTART_AT = 256;

let loaded: Promise<LlamaCheckpoint | string> | undefined;

/**
 * stories260K from `$KVCOMPACT_MODEL_DIR` or `../shared/models` beside the working directory (the places the
 * CLI looks first); the bench does not download (src/node resolves files, and sits above this layer).
 */
function loadStories(): Promise<LlamaCheckpoint | string> {
  loaded ??= (async () => {
    const { readFile } = await import('node:fs/promises');
    const { join, resolve } = await import('node:path');
    const dirs = [process.env.KVCOMPACT_MODEL_DIR, resolve(process.cwd(), '../shared/models')].filter((d): d is string => !!d);
    for (const dir of dirs) {
      try {
        return parseCheckpoint(new Uint8Array(await readFile(join(dir, 'stories260K.bin'))));
      } catch {
        // next place
      }
    }
    return `stories260K.bin not found in ${dirs.join(' or ')}; set KVCOMPACT_MODEL_DIR (e.g. after \`kvcompact generate\` downloaded it)`;
  })();
  return loaded;
}

/** The checkpoint a model suite times: its name in the case names, and how to load it (a string: why it is absent). */
export interface BenchModel {
  readonly name: string;
  load(): Promise<LlamaCheckpoint | string>;
}

const STORIES: BenchModel = { name: 'stories260K', load: loadStories };

async function prepareDecode(
  gpu: GpuContext,
  source: BenchModel,
  weights: WeightPrecision,
  batch: number,
  batchedAttention = true,
): Promise<PreparedCase | SkippedCase> {
  const checkpoint = await source.load();
  if (typeof checkpoint === 'string') return { skip: checkpoint };
  const { config } = checkpoint;
  const seqs = Array.from({ length: batch }, (_, i) => i + 1);
  const cache = PagedKvCache.create(gpu, {
    shape: { layers: config.nLayers, kvHeads: config.nKvHeads, headDim: config.headSize },
    nHeads: config.nHeads,
    fullFormat: 'f32',
    seqSlots: batch,
    maxTokensPerHead: config.seqLen,
  });
  const model = new GpuLlama(gpu, checkpoint, cache, { weights, batchedAttention });
  const positions = new Map<number, number>();
  const start = async (seq: number) => {
    if (positions.has(seq)) await cache.freeSequence(seq);
    cache.addSequence(seq);
    await model.forward(seq, Array.from({ length: PROMPT }, (_, i) => (i === 0 ? 1 : (seq * 7 + i * 13) % config.vocabSize)));
    positions.set(seq, PROMPT);
  };
  for (const seq of seqs) await start(seq);
  let token = 3;
  return {
    // A decode step reads every weight once (batched or not) plus the growing KV, which this counts out.
    bytes: gpuWeightBytes(config, weights),
    items: { count: batch, unit: 'token' },
    run: async (clock) => {
      if ((positions.get(1) ?? 0) >= RESTART_AT) for (const seq of seqs) await start(seq);
      const tokens = seqs.map((s) => (token + s) % config.vocabSize);
      token = (token * 31 + 7) % config.vocabSize;
      if (batch === 1) await clock(() => model.forward(1, tokens));
      else await clock(() => model.forwardBatch(seqs, tokens));
      for (const seq of seqs) positions.set(seq, (positions.get(seq) ?? 0) + 1);
    },
    destroy: () => {
      model.destroy();
      cache.destroy();
    },
  };
}

/**
 * Model runner decode throughput of `source` (default stories260K): tokens per second at batch 1
 * (GpuLlama.forward) and batch 8 (GpuLlama.forwardBatch, one submit for 8 sequences), f32 against f16 weights, on
 * the paged f32 cache, plus f16 batch 8 with attention per sequence (the path before one dispatch served the whole
 * batch; its speedup column is its time against the batched row). Wall clock per step (submit, GPU work, logits readback); `items` makes the report's time
 * per token. `kvcompact bench --only model --model DIR|FILE|hf:…` times another model.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [modelSuiteFor({ name: 'SmolLM2', load: async () => checkpoint })], benchSettings(true));
 * ```
 */
export function modelSuiteFor(source: BenchModel = STORIES): BenchSuite {
  const { name } = source;
  return {
    name: 'model',
    description: `model runner decode steps (GpuLlama, ${name}, paged f32 cache): batch 1 and batch 8, f32 and f16 weights; batch 8 with attention per sequence`,
    counts: 'weight bytes one decode step reads (KV reads not counted)',
    cases: () => [
      ...(['f32', 'f16'] as const).flatMap((weights) =>
        [1, 8].map(
          (batch): BenchCase => ({
            name: `model/${name}/${weights}/batch${batch}`,
            shape: `${name} · ${weights} weights · ${batch} sequence${batch > 1 ? 's' : ''} × 1 token per step · ctx ${PROMPT}..${RESTART_AT}`,
            series: `batch${batch}`,
            ...(weights === 'f16' ? { baseline: `model/${name}/f32/batch${batch}` } : {}),
            setup: (gpu) => prepareDecode(gpu, source, weights, batch),
          }),
        ),
      ),
      {
        name: `model/${name}/f16/batch8-per-sequence`,
        shape: `${name} · f16 weights · 8 sequences × 1 token per step, attention per sequence · ctx ${PROMPT}..${RESTART_AT}`,
        series: 'batch8 per-sequence attention',
        baseline: `model/${name}/f16/batch8`,
        setup: (gpu) => prepareDecode(gpu, source, 'f16', 8, false),
      },
    ],
  };
}

/**
 * The registered model suite: stories260K (see {@link modelSuiteFor}).
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [modelSuite], benchSettings(true));
 * ```
 */
export const modelSuite: BenchSuite = modelSuiteFor();
