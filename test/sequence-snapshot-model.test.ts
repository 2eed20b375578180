import { describe, expect, it } from 'vitest';
import { CacheSwitch } from '../src/app/cache-switch.js';
import { DecodeCompressor, type DecodeCompressorOptions } from '../src/compress/decode-compression.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { snapshotBytes, type SequenceSnapshot } from '../src/engine/sequence-snapshot.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { cacheOptionsForModel } from '../src/model/cache-options.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { decodeStoreEntry, encodeStoreEntry } from '../src/store/entry-format.js';
import { entryToSnapshot, snapshotToEntry } from '../src/store/snapshot-entry.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

// "Restore + continue equals computing from scratch": a generation snapshotted midway (after compressions) and
// continued from the snapshot, in a new sequence of the same cache and in a new cache, with the decode schedule
// resumed from its saved counters, produces the same greedy tokens as the uninterrupted run.

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[] };
const PROMPT = reference.tokens.slice(0, 20);
const SNAPSHOT_AT = 40;
const CONTINUE = 64;

/** Kept original positions of every head. */
async function positions(cache: PagedKvCache, seq: number): Promise<number[][]> {
  const out: number[][] = [];
  for (let layer = 0; layer < cache.shape.layers; layer++) {
    for (let head = 0; head < cache.shape.kvHeads; head++) out.push([...(await cache.readHead(seq, layer, head)).positions]);
  }
  return out;
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if ((logits[i] ?? -Infinity) > (logits[best] ?? -Infinity)) best = i;
  return best;
}

const CASES: { name: string; bits: 4 | 16; schedule: DecodeCompressorOptions }[] = [
  { name: 'snapkv budget 32 int4', bits: 4, schedule: { budget: 32, compress: { policy: 'snapkv', budgetMode: 'adakv', bits: 4 } } },
  { name: 'h2o budget 32 f16', bits: 16, schedule: { budget: 32, compress: { policy: 'h2o' } } },
];

/** What a store would keep: the snapshot (through the entry codec), the schedule's counters and the next token. */
async function throughStore(snapshot: SequenceSnapshot, decode: DecodeCompressor, next: number): Promise<{ snapshot: SequenceSnapshot; counters: { steps: number; sinceCompress: number }; next: number }> {
  const bytes = await encodeStoreEntry(snapshotToEntry(snapshot, { fingerprint: 'stories260K', settings: null, tokenCount: snapshot.sequenceLength, appState: { ...decode.counters(), next } }));
  const { snapshot: back, appState } = entryToSnapshot(await decodeStoreEntry(bytes));
  const app = appState as { steps: number; sinceCompress: number; next: number };
  return { snapshot: back, counters: { steps: app.steps, sinceCompress: app.sinceCompress }, next: app.next };
}

describe('restore + continue equals computing from scratch (stories260K)', () => {
  it.each(CASES)('GPU engine, $name: same greedy tokens after a restore into a new sequence and a new cache', async ({ bits, schedule }) => {
    const gpu = await testGpu();
    const options = cacheOptionsForModel(checkpoint.config, { bits, blockSize: 16, seqSlots: 3, maxTokensPerHead: 256 });
    const cacheA = PagedKvCache.create(gpu, options);
    const cacheB = PagedKvCache.create(gpu, options);
    const backend = new CacheSwitch(cacheA);
    const model = new GpuLlama(gpu, checkpoint, backend);
    try {
      const continueFrom = async (cache: PagedKvCache, seq: number, decode: DecodeCompressor, first: number, steps: number): Promise<number[]> => {
        backend.use(cache);
        const tokens: number[] = [];
        let token = first;
        for (let s = 0; s < steps; s++) {
          tokens.push(token);
          await decode.beforeStep(seq, 1);
          token = argmax(await model.forward(seq, [token]));
        }
        return tokens;
      };
      cacheA.addSequence(1);
      const decode = new DecodeCompressor(cacheA, schedule);
      const first = argmax(await model.forward(1, PROMPT));
      decode.prefilled(PROMPT.length);
      // Up to the snapshot point: SNAPSHOT_AT tokens chosen and appended; `next` is the token to append next.
      const head = await continueFrom(cacheA, 1, decode, first, SNAPSHOT_AT + 1);
      const next = head.pop() as number;
      expect(decode.reports.length).toBeGreaterThan(0);
      const t0 = performance.now();
      const snapshot = await cacheA.exportSequence(1);
      const exportMs = performance.now() - t0;
      const atSnapshot = cacheA.sequenceBytes(1);
      const saved = await throughStore(snapshot, decode, next);
      const compressionsBefore = decode.reports.length;
      const uninterrupted = await continueFrom(cacheA, 1, decode, next, CONTINUE);
      const compressionsAfter = decode.reports.length;

      // A new sequence of the same cache.
      await cacheA.importSequence(2, saved.snapshot);
      const sameCache = await continueFrom(cacheA, 2, new DecodeCompressor(cacheA, { ...schedule, resume: saved.counters }), saved.next, CONTINUE);
      // A fresh cache (another process would build its own): the stored entry alone carries everything.
      const t1 = performance.now();
      await cacheB.importSequence(7, saved.snapshot);
      const importMs = performance.now() - t1;
      const resumed = new DecodeCompressor(cacheB, { ...schedule, resume: saved.counters });
      const otherCache = await continueFrom(cacheB, 7, resumed, saved.next, CONTINUE);

      expect(sameCache).toEqual(uninterrupted);
      expect(otherCache).toEqual(uninterrupted);
      // Every compression after the restore kept the same tokens as the unstopped run's.
      const kept = await positions(cacheA, 1);
      expect(await positions(cacheA, 2)).toEqual(kept);
      expect(await positions(cacheB, 7)).toEqual(kept);
      if (schedule.compress?.policy === 'h2o') {
        // Control: the same restore without the statistics (zeroed) evicts other tokens, so the checks above see them.
        const blind = { ...saved.snapshot, stats: { attnSum: new Float32Array(saved.snapshot.stats.attnSum.length), attnSqSum: new Float32Array(saved.snapshot.stats.attnSum.length), attnCount: new Float32Array(saved.snapshot.stats.attnSum.length) } };
        await cacheB.importSequence(8, blind);
        await continueFrom(cacheB, 8, new DecodeCompressor(cacheB, { ...schedule, resume: saved.counters }), saved.next, CONTINUE);
        expect(await positions(cacheB, 8)).not.toEqual(kept);
      }
      // The continuation compressed as often as the uninterrupted one, with the same budgets.
      expect(resumed.reports.length).toBeGreaterThan(0);
      expect(resumed.reports.map((r) => [r.budget, r.bits])).toEqual(decode.reports.slice(compressionsBefore).map((r) => [r.budget, r.bits]));
      expect(cacheA.checkInvariants()).toEqual([]);
      expect(cacheB.checkInvariants()).toEqual([]);
      console.log(
        `${schedule.compress?.policy} b${schedule.budget}: ${head.length} + ${CONTINUE} tokens, ${compressionsAfter} compressions; restored runs identical; ` +
          `snapshot at ${snapshot.sequenceLength} tokens ${snapshotBytes(snapshot)} B (its blocks ${atSnapshot.bytes} B, f16 baseline ${atSnapshot.baselineF16} B; the window of 32 roped queries per layer is ${snapshot.windows.reduce((n, w) => n + w.queries.byteLength, 0)} B); ` +
          `export ${exportMs.toFixed(1)} ms, import ${importMs.toFixed(1)} ms (${gpu.adapter.vendor} ${gpu.adapter.architecture})`,
      );
    } finally {
      model.destroy();
      cacheA.destroy();
      cacheB.destroy();
    }
  });

  it('CPU engine (ReferenceLlama), snapkv budget 32 int4: same greedy tokens after a restore into a new cache', async () => {
    const schedule = CASES[0]?.schedule as DecodeCompressorOptions;
    const options = cacheOptionsForModel(checkpoint.config, { bits: 4, blockSize: 16, seqSlots: 3, maxTokensPerHead: 256 });
    const model = new ReferenceLlama(checkpoint);
    const run = async (cache: CpuKvCache, seq: number, decode: DecodeCompressor, first: number, steps: number): Promise<number[]> => {
      const tokens: number[] = [];
      let token = first;
      for (let s = 0; s < steps; s++) {
        tokens.push(token);
        await decode.beforeStep(seq, 1);
        token = argmax(model.forward(token, cache.sequenceLength(seq), { attention: cache.attentionHook(seq) }));
      }
      return tokens;
    };
    const cacheA = CpuKvCache.create(options);
    cacheA.addSequence(1);
    const decode = new DecodeCompressor(cacheA, schedule);
    let logits: Float32Array = new Float32Array(0);
    for (const [pos, token] of PROMPT.entries()) logits = model.forward(token, pos, { attention: cacheA.attentionHook(1) });
    decode.prefilled(PROMPT.length);
    const head = await run(cacheA, 1, decode, argmax(logits), SNAPSHOT_AT + 1);
    const next = head.pop() as number;
    expect(decode.reports.length).toBeGreaterThan(0);
    const saved = await throughStore(await cacheA.exportSequence(1), decode, next);
    const uninterrupted = await run(cacheA, 1, decode, next, CONTINUE);
    const cacheB = CpuKvCache.create(options);
    await cacheB.importSequence(3, saved.snapshot);
    const restored = await run(cacheB, 3, new DecodeCompressor(cacheB, { ...schedule, resume: saved.counters }), saved.next, CONTINUE);
    expect(restored).toEqual(uninterrupted);
    expect(cacheB.checkInvariants()).toEqual([]);
  });
});
