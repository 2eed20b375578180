import { describe, expect, it } from 'vitest';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import type { PagedKvCacheOptions } from '../src/cache/cache-options.js';
import { type SequenceSnapshot, snapshotBytes, EMPTY_WINDOW_POSITION } from '../src/engine/sequence-snapshot.js';
import { decodeStoreEntry, encodeStoreEntry } from '../src/store/entry-format.js';
import { entryToSnapshot, snapshotToEntry } from '../src/store/snapshot-entry.js';
import { InvalidArgumentError, OutOfBlocksError, SnapshotMismatchError, StoreEntryError, TruncateCompressedError } from '../src/errors.js';
import { testGpu, seededRandom } from './helpers/gpu.js';
import { ENGINES, OPTIONS, SHAPE, type Engine, type EngineCase, decode, headContents, randomKv } from './helpers/reliability.js';

const QUANT: Partial<PagedKvCacheOptions> = { quantBits: 4 };

/** Every part of the cache state a snapshot carries, as plain arrays (for toEqual). */
function plain(s: SequenceSnapshot): unknown {
  return {
    ...s,
    fullBlocks: [...s.fullBlocks],
    quantBlocks: [...s.quantBlocks],
    stats: { attnSum: [...s.stats.attnSum], attnSqSum: [...s.stats.attnSqSum], attnCount: [...s.stats.attnCount] },
    windows: s.windows.map((w) => ({ ...w, positions: [...w.positions], queries: [...w.queries] })),
  };
}

function intact(cache: Engine, seq: number): number[] {
  const out: number[] = [];
  for (let layer = 0; layer < SHAPE.layers; layer++) for (let head = 0; head < SHAPE.kvHeads; head++) out.push(cache.meta.intactFrom(seq, layer, head));
  return out;
}

/** A sequence with compressed, per-head different lengths, quantized blocks, statistics and a full window. */
async function compressedSequence(engine: EngineCase, seq = 1, options: Partial<PagedKvCacheOptions> = QUANT): Promise<Engine> {
  const cache = await engine.create(options);
  cache.addSequence(seq);
  const random = seededRandom(7);
  await decode(cache, seq, 50, random);
  await cache.compress(seq, { policy: 'snapkv', budget: 40, budgetMode: 'pyramid', recent: 4, bits: 4 });
  await decode(cache, seq, 5, random);
  return cache;
}

async function expectSameSequence(a: Engine, seqA: number, b: Engine, seqB: number, original: SequenceSnapshot): Promise<void> {
  expect(await headContents(b, seqB)).toEqual(await headContents(a, seqA));
  expect(b.sequenceLength(seqB)).toBe(a.sequenceLength(seqA));
  expect(intact(b, seqB)).toEqual(intact(a, seqA));
  expect(b.meta.minTruncateLength(seqB)).toBe(a.meta.minTruncateLength(seqA));
  expect(b.sequenceBytes(seqB)).toEqual(a.sequenceBytes(seqA));
  // Re-exporting gives back the same words, rows, statistics and window: the import restored every part.
  expect(plain(await b.exportSequence(seqB))).toEqual(plain(original));
  expect(b.checkInvariants()).toEqual([]);
}

describe.each(ENGINES)('sequence snapshots from the $name engine', (source) => {
  it('hold distinct blocks once, per-head lengths, statistics and a canonical window', async () => {
    const cache = await compressedSequence(source);
    const s = await cache.exportSequence(1);
    const counts = s.rows.map((r) => r.tokenCount);
    expect(new Set(counts).size).toBeGreaterThan(1); // pyramid budgets gave the layers different lengths
    expect(s.quantFormat).toBe('int4');
    expect(s.quantBlocks.length).toBeGreaterThan(0);
    const refs = s.rows.flatMap((r) => r.entries.map((e) => `${e.pool}:${e.index}`));
    expect(new Set(refs).size).toBe(refs.length);
    expect(s.stats.attnCount.some((c) => c > 0)).toBe(true);
    for (const w of s.windows) {
      expect(w.valid).toBe(OPTIONS.observationWindow);
      expect(w.end).toBe(55);
      expect([...w.positions].filter((p) => p !== EMPTY_WINDOW_POSITION).length).toBe(w.valid);
    }
    const bytes = snapshotBytes(s);
    expect(bytes).toBeGreaterThan(s.fullBlocks.byteLength + s.quantBlocks.byteLength);
    console.log(`${source.name}: snapshot of 55 tokens (snapkv pyramid b40 int4, 2 layers × 2 heads × 8 dims) = ${bytes} B, sequenceBytes ${cache.sequenceBytes(1).bytes} B`);
  });

  for (const [target, fullFormat] of ENGINES.flatMap((t) => [[t, 'f32'], [t, 'f16']] as const)) {
    it(`imports into a fresh ${target.name} cache exactly (${fullFormat} pool), and both continue identically`, async () => {
      const options = { ...QUANT, fullFormat };
      const cache = await compressedSequence(source, 1, options);
      const s = await cache.exportSequence(1);
      const fresh = await target.create(options);
      await fresh.importSequence(4, s);
      await expectSameSequence(cache, 1, fresh, 4, s);
      // The same next steps on both give the same state (the window and statistics drive the next compression).
      await decode(cache, 1, 20, seededRandom(99));
      await decode(fresh, 4, 20, seededRandom(99));
      if (source.name === target.name) {
        await cache.compress(1, { policy: 'snapkv', budget: 24, budgetMode: 'pyramid', recent: 4, bits: 4 });
        await fresh.compress(4, { policy: 'snapkv', budget: 24, budgetMode: 'pyramid', recent: 4, bits: 4 });
        expect(plain(await fresh.exportSequence(4))).toEqual(plain(await cache.exportSequence(1)));
      } else {
        // Across engines attention differs in the last float bits, so compare what each stored: same positions.
        const a = await headContents(cache, 1);
        const b = await headContents(fresh, 4);
        expect(b.map((h) => h.positions)).toEqual(a.map((h) => h.positions));
        for (const [i, h] of b.entries()) for (const [j, k] of h.keys.entries()) expect(k).toBeCloseTo(a[i]?.keys[j] ?? NaN, fullFormat === 'f32' ? 5 : 2);
      }
      expect(fresh.checkInvariants()).toEqual([]);
    });
  }

  it('imports into a new id of the same cache; the blocks are its own and outlive the source', async () => {
    const cache = await compressedSequence(source);
    const s = await cache.exportSequence(1);
    const used = (): [number, number] => [cache.meta.poolUsage('full').used, cache.meta.poolUsage('quant').used];
    const [fullBefore, quantBefore] = used();
    await cache.importSequence(2, s);
    const blocks = s.fullBlocks.length / cache.meta.fullLayout.wordsPerBlock;
    const quant = s.quantBlocks.length / (cache.meta.quantLayout?.wordsPerBlock ?? 1);
    expect(used()).toEqual([fullBefore + blocks, quantBefore + quant]);
    expect(cache.sequenceBytes(2)).toEqual(cache.sequenceBytes(1));
    await expectSameSequence(cache, 1, cache, 2, s);
    const contents = await headContents(cache, 2);
    await cache.freeSequence(1);
    expect(used()).toEqual([blocks, quant]);
    expect(await headContents(cache, 2)).toEqual(contents);
    await cache.freeSequence(2);
    expect(used()).toEqual([0, 0]);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it.each([1, 16, 65])('round-trips a sequence of %i tokens (appended, then decoded)', async (tokens) => {
    const cache = await source.create();
    cache.addSequence(3);
    const { keys, values } = randomKv(tokens, seededRandom(tokens));
    await cache.append(3, keys, values);
    const s0 = await cache.exportSequence(3);
    expect(s0.rows.every((r) => r.tokenCount === tokens && r.entries.length === Math.ceil(tokens / 16))).toBe(true);
    expect(s0.windows.every((w) => w.valid === 0 && w.end === 0)).toBe(true);
    await decode(cache, 3, 3, seededRandom(1));
    const s = await cache.exportSequence(3);
    for (const target of ENGINES) {
      const other = await target.create();
      await other.importSequence(0, s);
      await expectSameSequence(cache, 3, other, 0, s);
    }
  });

  it('refuses a mismatched or inconsistent snapshot, and one that does not fit, leaving the cache unchanged', async () => {
    const cache = await compressedSequence(source);
    const s = await cache.exportSequence(1);
    for (const target of ENGINES) {
      const cases: [Partial<PagedKvCacheOptions>, string][] = [
        [{ shape: { ...SHAPE, headDim: 16 } }, 'shape.headDim'],
        [{ nHeads: 2 }, 'nHeads'],
        [{ observationWindow: 4 }, 'observationWindow'],
        [{ fullFormat: 'f16' }, 'fullFormat'],
        [{ quantBits: 8 }, 'quantFormat'],
        [{ maxTokensPerHead: 16, quantBits: 4 }, 'rows[0].tokenCount'],
      ];
      for (const [options, field] of cases) {
        const other = await target.create(options);
        const memory = other.memory();
        const error = await other.importSequence(2, s).then(() => null, (e: unknown) => e);
        expect(error, field).toBeInstanceOf(SnapshotMismatchError);
        expect((error as SnapshotMismatchError).field).toBe(field);
        expect(other.hasSequence(2)).toBe(false);
        expect(other.memory()).toEqual(memory);
      }
      const other = await target.create(QUANT);
      const broken: SequenceSnapshot[] = [
        { ...s, rows: s.rows.map((r, i) => (i === 1 ? { ...r, entries: r.entries.map((e) => ({ ...e, index: e.index + 100 })) } : r)) },
        { ...s, stats: { ...s.stats, attnSum: s.stats.attnSum.subarray(1) } },
        { ...s, rows: s.rows.map((r, i) => (i === 0 ? { ...r, tokenCount: r.tokenCount + 16 } : r)) },
        { ...s, windows: s.windows.map((w) => ({ ...w, valid: w.valid - 1 })) },
      ];
      for (const bad of broken) {
        await expect(other.importSequence(2, bad)).rejects.toBeInstanceOf(SnapshotMismatchError);
        expect(other.hasSequence(2)).toBe(false);
      }
      // A byte budget too small for the blocks: OutOfBlocksError, nothing allocated, nothing added.
      const tight = await target.create({ ...QUANT, maxBytes: 8 * other.meta.bytesPerBlock('full'), initialFullBlocks: 1, compactionReserve: 0 });
      const memory = tight.memory();
      await expect(tight.importSequence(2, s)).rejects.toBeInstanceOf(OutOfBlocksError);
      expect(tight.hasSequence(2)).toBe(false);
      expect(tight.memory()).toEqual(memory);
      expect(tight.meta.quantFormat).toBe('int4');
      expect(tight.checkInvariants()).toEqual([]);
      // An id already live is refused too, before anything is allocated.
      other.addSequence(5);
      const before = other.memory();
      await expect(other.importSequence(5, s)).rejects.toBeInstanceOf(InvalidArgumentError);
      expect(other.memory()).toEqual(before);
    }
  });

  it('restores truncation bounds: the restored sequence truncates (and refuses) exactly where the original does', async () => {
    const cache = await compressedSequence(source);
    await decode(cache, 1, 10, seededRandom(4));
    await cache.truncate(1, cache.sequenceLength(1) - 3);
    const s = await cache.exportSequence(1);
    expect(s.rows.some((r) => r.intactFrom > 0)).toBe(true);
    for (const target of ENGINES) {
      const other = await target.create(QUANT);
      await other.importSequence(1, s);
      const min = cache.meta.minTruncateLength(1);
      // truncate throws synchronously on an idle sequence.
      expect(() => other.truncate(1, min - 1)).toThrow(TruncateCompressedError);
      await other.truncate(1, min);
      const copy = await source.create(QUANT);
      await copy.importSequence(1, s);
      await copy.truncate(1, min);
      expect(plain(await other.exportSequence(1))).toEqual(plain(await copy.exportSequence(1)));
    }
  });

  it('goes through the per-sequence queue: an export issued during a compression sees its result', async () => {
    const cache = await compressedSequence(source);
    await decode(cache, 1, 30, seededRandom(8));
    const compressing = cache.compress(1, { policy: 'h2o', budget: 24, bits: 4 });
    const exported = cache.exportSequence(1);
    await compressing;
    const s = await exported;
    expect(s.rows.every((r) => r.tokenCount <= 24)).toBe(true);
    expect(plain(s)).toEqual(plain(await cache.exportSequence(1)));
    const importing = cache.importSequence(2, s);
    await importing;
    await expectSameSequence(cache, 1, cache, 2, s);
  });

  it('sets the quantized format of a cache created without one; refuses an open speculation', async () => {
    const cache = await compressedSequence(source);
    const s = await cache.exportSequence(1);
    const lazy = await source.create();
    expect(lazy.meta.quantFormat).toBeUndefined();
    await lazy.importSequence(1, s);
    expect(lazy.meta.quantFormat).toBe('int4');
    await expectSameSequence(cache, 1, lazy, 1, s);
    cache.beginSpeculation(1);
    await expect(cache.exportSequence(1)).rejects.toBeInstanceOf(InvalidArgumentError);
    await cache.truncate(1, cache.sequenceLength(1));
    await expect(cache.exportSequence(1)).resolves.toBeDefined();
  });
});

describe('sequence snapshots in store entries', () => {
  async function snapshot(): Promise<SequenceSnapshot> {
    return (await compressedSequence(ENGINES[1] as EngineCase)).exportSequence(1);
  }
  const meta = { fingerprint: 'model-x', settings: { policy: 'snapkv', budget: 40 }, tokenCount: 55 };

  it('round-trips through encodeStoreEntry/decodeStoreEntry with the app state', async () => {
    const s = await snapshot();
    const entry = snapshotToEntry(s, { ...meta, appState: { steps: 12, sinceCompress: 3 } });
    expect([...entry.sections.keys()]).toEqual(['rows', 'full', 'quant', 'stats', 'window', 'app']);
    const bytes = await encodeStoreEntry(entry);
    const back = entryToSnapshot(await decodeStoreEntry(bytes, { fingerprint: 'model-x', settings: meta.settings }));
    expect(plain(back.snapshot)).toEqual(plain(s));
    expect(back.appState).toEqual({ steps: 12, sinceCompress: 3 });
    expect(entryToSnapshot(await decodeStoreEntry(await encodeStoreEntry(snapshotToEntry(s, meta)))).appState).toBeUndefined();
    console.log(`entry ${bytes.length} B for a ${snapshotBytes(s)} B snapshot`);
    const cache = CpuKvCache.create({ ...OPTIONS, ...QUANT });
    await cache.importSequence(0, back.snapshot);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('fuzz: truncated or bit-flipped entries are refused with StoreEntryError, never imported', async () => {
    const bytes = await encodeStoreEntry(snapshotToEntry(await snapshot(), meta));
    const random = seededRandom(5);
    for (let i = 0; i < 200; i++) {
      const mutated = i % 2 === 0 ? bytes.slice(0, Math.floor(random() * bytes.length)) : bytes.slice();
      if (i % 2 === 1) {
        const at = Math.floor(random() * bytes.length);
        mutated[at] = (mutated[at] as number) ^ (1 << Math.floor(random() * 8));
      }
      await expect(decodeStoreEntry(mutated).then(entryToSnapshot)).rejects.toBeInstanceOf(StoreEntryError);
    }
  });

  it('refuses sections that disagree with the header under a valid checksum', async () => {
    const s = await snapshot();
    const entry = snapshotToEntry(s, meta);
    const edits: [string, (e: typeof entry) => typeof entry][] = [
      ['short full section', (e) => ({ ...e, sections: new Map([...e.sections].map(([k, v]) => [k, k === 'full' ? v.subarray(0, v.length - 4) : v])) })],
      ['odd stats section', (e) => ({ ...e, sections: new Map([...e.sections].map(([k, v]) => [k, k === 'stats' ? v.subarray(0, v.length - 1) : v])) })],
      ['missing window', (e) => ({ ...e, sections: new Map([...e.sections].filter(([k]) => k !== 'window')) })],
      ['block index out of range', (e) => {
        const rows = new Uint32Array((e.sections.get('rows') as Uint8Array).slice().buffer);
        rows[3] = 999;
        return { ...e, sections: new Map([...e.sections].map(([k, v]) => [k, k === 'rows' ? new Uint8Array(rows.buffer) : v])) };
      }],
      ['huge layer count', (e) => ({ ...e, shape: { ...e.shape, layers: 1e9 } })],
      ['unknown quant bits', (e) => ({ ...e, shape: { ...e.shape, quantBits: 3 } })],
      ['other layout version', (e) => ({ ...e, layoutVersion: 7 })],
    ];
    for (const [name, edit] of edits) {
      const decoded = await decodeStoreEntry(await encodeStoreEntry(edit(entry)));
      let error: unknown = null;
      try {
        entryToSnapshot(decoded);
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(StoreEntryError);
    }
  });
});

describe('GPU snapshot export', () => {
  it('reads a sequence back in one staging map', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { ...OPTIONS, ...QUANT });
    cache.addSequence(1);
    await decode(cache, 1, 40, seededRandom(3));
    await cache.compress(1, { policy: 'h2o', budget: 20, bits: 4 });
    const device = gpu.device;
    const original = device.createBuffer.bind(device);
    let mappable = 0;
    device.createBuffer = (descriptor: GPUBufferDescriptor): GPUBuffer => {
      if ((descriptor.usage & GPUBufferUsage.MAP_READ) !== 0) mappable++;
      return original(descriptor);
    };
    try {
      await cache.exportSequence(1);
    } finally {
      device.createBuffer = original;
    }
    expect(mappable).toBe(1);
    cache.destroy();
  });
});
