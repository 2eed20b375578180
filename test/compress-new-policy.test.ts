// A policy is one file plus one registry line: this file defines a policy the library has never seen (one class,
// one registerPolicy call) and shows it scores on the CPU and the GPU alike and compresses a paged cache through
// the ordinary path, with nothing edited anywhere else.
import { describe, expect, it } from 'vitest';
import type { BudgetMode } from '../src/compress/budgets.js';
import type { ScoreGpuInput, TokenScorePlan } from '../src/compress/gpu-policies.js';
import { BasePolicy, type ScoreInput } from '../src/compress/policy.js';
import { createPolicy, policyNames, policyRequirements, registerPolicy } from '../src/compress/registry.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { InvalidArgumentError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { kernelSource } from '../src/gpu/kernel.js';
import { testGpu } from './helpers/gpu.js';
import { fillSequence, referenceInputs, referenceKeep } from './helpers/paged-compress.js';

/**
 * Peak attention: attnSqSum / attnSum, the probability-weighted mean of the probabilities a token received, so
 * tokens some query attended to sharply beat tokens that collected diffuse attention (0 when never attended).
 */
class PeakAttentionPolicy extends BasePolicy {
  readonly name = 'peak-attention';

  override gpuPlan(): TokenScorePlan {
    return {
      kind: 'token',
      statistics: ['attnSum', 'attnSqSum'],
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  return select(0.0, token.attn_sq_sum / token.attn_sum, token.attn_sum > 0.0);
}`,
    };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { attnSum, attnSqSum } = input;
    if (!attnSum || !attnSqSum) throw new InvalidArgumentError('attnSum', 'peak-attention needs attnSum and attnSqSum');
    return tokens.map((n, kv) =>
      Float32Array.from({ length: n }, (_, t) => {
        const sum = attnSum[kv]?.[t] ?? 0;
        return sum > 0 ? (attnSqSum[kv]?.[t] ?? 0) / sum : 0;
      }),
    );
  }
}

registerPolicy('peak-attention', (options) => new PeakAttentionPolicy(options));

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;
const WINDOW = 8;
const PROTECTION = { sinks: 4, recent: 8 };
const SEED = 3;
// One f32 division against the f64 reference: the tolerance test/gpu-scoring.test.ts states for h2o.
const RELATIVE = 1e-6;

/** A cache holding sequences of 1, 63 and 65 tokens (prefill chunks, then decode steps). */
async function filledCache(gpu: GpuContext, quantBits?: 4): Promise<PagedKvCache> {
  const cache = PagedKvCache.create(gpu, {
    shape: SHAPE,
    nHeads: N_HEADS,
    fullFormat: 'f32',
    ...(quantBits ? { quantBits } : {}),
    maxTokensPerHead: 128,
    observationWindow: WINDOW,
    seqSlots: 3,
  });
  const chunks: Record<number, number[]> = { 1: [1], 2: [60, 1, 1, 1], 3: [57, 1, 1, 1, 5] };
  for (const [seq, parts] of Object.entries(chunks)) {
    cache.addSequence(Number(seq));
    await fillSequence(gpu, cache, Number(seq), parts, 10 + Number(seq));
  }
  return cache;
}

/** The policy's GPU scores of every layer of `seq`, per layer and head, read back. */
async function gpuScores(gpu: GpuContext, cache: PagedKvCache, seq: number, policy: BasePolicy): Promise<Float32Array[][]> {
  const { layers, kvHeads } = SHAPE;
  const slot = cache.meta.slotOf(seq);
  const stride = cache.maxTokensPerHead;
  const scores = createStorageBuffer(gpu, 'test:scores', layers * cache.meta.seqSlots * kvHeads * stride * 4);
  const input: ScoreGpuInput = {
    gpu,
    cache: cache.storage.bindings(0),
    full: cache.fullLayout,
    quant: cache.quantLayout,
    nHeads: N_HEADS,
    kvHeads,
    layer: 0,
    layerCount: layers,
    slot,
    seqLen: cache.sequenceLength(seq),
    stats: { attnSum: cache.attention.statistics.attnSum, attnSqSum: cache.attention.statistics.attnSqSum, attnCount: cache.attention.statistics.attnCount },
    scores,
    seed: SEED,
  };
  let all: Float32Array;
  try {
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      // Each layer's pools are buffers of their own: one scoring pass per layer, as the compression stages run it.
      for (let layer = 0; layer < layers; layer++) policy.scoreGpu(encoder, { ...input, cache: cache.storage.bindings(layer), layer, layerCount: 1 });
      gpu.submit([encoder.finish()]);
    });
    all = new Float32Array(await readBuffer(gpu, scores));
  } finally {
    scores.destroy();
  }
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: kvHeads }, (_, h) => {
      const row = (l * cache.meta.seqSlots + slot) * kvHeads + h;
      return all.slice(row * stride, row * stride + cache.tokenCount(seq, l, h));
    }),
  );
}

function mismatches(got: Float32Array, want: Float32Array, relative: number): string[] {
  const bad: string[] = [];
  if (got.length !== want.length) bad.push(`length ${got.length} ≠ ${want.length}`);
  want.forEach((w, t) => {
    const g = got[t] ?? NaN;
    const ok = w === Infinity || g === Infinity ? g === w : Math.abs(g - w) <= relative * Math.abs(w);
    if (!ok) bad.push(`t=${t}: gpu ${g} cpu ${w}`);
  });
  return bad;
}

describe('a policy defined in one file and registered with one line', () => {
  it('is a registered policy whose requirements the registry reports by name', () => {
    expect(policyNames()).toContain('peak-attention');
    expect(policyRequirements('peak-attention')).toEqual({ window: false, statistics: true });
    expect(createPolicy('peak-attention', PROTECTION).requires).toEqual({ window: false, statistics: true });
    // The built-ins, from their plans: the compressor picks its inputs from these, never from a name.
    expect(Object.fromEntries(['snapkv', 'h2o', 'kvcompress', 'tova', 'knorm', 'streaming', 'random'].map((name) => [name, policyRequirements(name)]))).toEqual({
      snapkv: { window: true, statistics: false },
      h2o: { window: false, statistics: true },
      kvcompress: { window: false, statistics: true },
      tova: { window: true, statistics: false },
      knorm: { window: false, statistics: false },
      streaming: { window: false, statistics: false },
      random: { window: false, statistics: false },
    });
  });

  it('scores on the GPU as its CPU reference does, for 1, 63 and 65 cached tokens', async () => {
    const gpu = await testGpu();
    const cache = await filledCache(gpu, 4);
    const policy = new PeakAttentionPolicy(PROTECTION);
    let finite = 0;
    for (const seq of [1, 2, 3]) {
      const want = (await referenceInputs(cache, seq, SEED)).map((input) => policy.score(input));
      const got = await gpuScores(gpu, cache, seq, policy);
      for (let l = 0; l < SHAPE.layers; l++) {
        for (let h = 0; h < SHAPE.kvHeads; h++) {
          const ref = want[l]?.[h] ?? new Float32Array();
          expect(mismatches(got[l]?.[h] ?? new Float32Array(), ref, RELATIVE).slice(0, 5), `seq ${seq} layer ${l} head ${h}`).toEqual([]);
          finite += ref.filter((s) => Number.isFinite(s) && s > 0).length;
        }
      }
    }
    expect(finite).toBeGreaterThan(100); // most tokens were scored, not protected or zero
    cache.destroy();
  });

  it('reads only the statistics its plan declares: an undeclared one reads as 0 on the GPU', async () => {
    const gpu = await testGpu();
    const cache = await filledCache(gpu);
    class Undeclared extends PeakAttentionPolicy {
      override gpuPlan(): TokenScorePlan {
        return { ...super.gpuPlan(), statistics: ['attnSqSum'] };
      }
    }
    const policy = new Undeclared(PROTECTION);
    expect(policy.requires.statistics).toBe(true);
    const got = await gpuScores(gpu, cache, 3, policy);
    const values = got.flatMap((layer) => layer.flatMap((head) => [...head]));
    expect(values.filter((s) => s !== Infinity).length).toBeGreaterThan(80);
    for (const s of values) expect(s === Infinity || s === 0).toBe(true);
    cache.destroy();
  });

  const cases: [BudgetMode, 16 | 4][] = [
    ['uniform', 16],
    ['adakv', 4],
    ['global', 16],
  ];
  it.each(cases)('compresses through PagedKvCache.compress to the CPU reference kept sets (%s, %i bits)', async (mode, bits) => {
    const gpu = await testGpu();
    const cache = await filledCache(gpu, bits === 4 ? 4 : undefined);
    for (const seq of [2, 3]) {
      const expected = await referenceKeep(cache, seq, createPolicy('peak-attention', PROTECTION), mode, 24, SEED);
      const report = await cache.compress(seq, { policy: 'peak-attention', budget: 24, budgetMode: mode, bits, ...PROTECTION, seed: SEED });
      expect(report.policy).toBe('peak-attention');
      let evicted = 0;
      for (let l = 0; l < SHAPE.layers; l++) {
        for (let h = 0; h < SHAPE.kvHeads; h++) {
          const kept = [...(await cache.readHead(seq, l, h)).positions];
          expect(kept, `seq ${seq} layer ${l} head ${h}`).toEqual(expected[l]?.[h]);
          evicted += cache.sequenceLength(seq) - kept.length;
        }
      }
      expect(evicted).toBeGreaterThan(0);
    }
    cache.destroy();
  });

  it('is refused with a typed error when its WGSL lacks token_score or it names an unknown statistic', async () => {
    const gpu = await testGpu();
    const cache = await filledCache(gpu);
    class Misnamed extends PeakAttentionPolicy {
      override gpuPlan(): TokenScorePlan {
        return { ...super.gpuPlan(), wgsl: 'fn peak(token: ScoredToken) -> f32 { return 0.0; }' };
      }
    }
    class UnknownStatistic extends PeakAttentionPolicy {
      override gpuPlan(): TokenScorePlan {
        return { ...super.gpuPlan(), statistics: ['attnMax' as 'attnSum'] };
      }
    }
    await expect(gpuScores(gpu, cache, 3, new Misnamed())).rejects.toThrow(/fn token_score\(token: ScoredToken\) -> f32/);
    await expect(gpuScores(gpu, cache, 3, new Misnamed())).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(gpuScores(gpu, cache, 3, new UnknownStatistic())).rejects.toThrow(/attnMax is not one of attnSum, attnSqSum, attnCount/);
    cache.destroy();
  });
});

describe('KernelSpec.functions', () => {
  const spec = { name: 'probe', body: '@compute @workgroup_size(1) fn main() { _ = score(); }', constants: {}, uniforms: [] };

  it('places a caller-supplied function after the libraries and before the body', () => {
    const source = kernelSource({ ...spec, libraries: ['// library'], functions: [{ name: 'score', source: 'fn score() -> f32 { return 1.0; }' }] });
    const at = (text: string) => source.indexOf(text);
    expect(at('// library')).toBeGreaterThan(0);
    expect(at('fn score()')).toBeGreaterThan(at('// library'));
    expect(at('fn main()')).toBeGreaterThan(at('fn score()'));
  });

  it('refuses a source that does not declare the function it is given for', () => {
    expect(() => kernelSource({ ...spec, functions: [{ name: 'score', source: 'fn scores() -> f32 { return 1.0; }' }] })).toThrow(
      /must declare "fn score\(/,
    );
    expect(() => kernelSource({ ...spec, functions: [{ name: 'not-wgsl', source: 'fn x() {}' }] })).toThrow(InvalidArgumentError);
  });
});
