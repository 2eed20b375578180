import { utilisationReport } from '../src/cache/memory-report.js';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { CacheMetadata, type PoolName } from '../src/cache/cache-metadata.js';
import { checkInvariants } from '../src/cache/invariants.js';
import { blockLayout, bytesPerBlock, decodeBlockRef, encodeBlockRef } from '../src/format/layout.js';
import { mulberry32 } from '../src/random.js';

// mulberry32: small, seeded, good enough to drive an operation sequence reproducibly.
const prng = mulberry32;

const shape = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 4 };
const { layers, kvHeads, blockSize: BS } = shape;
const HEADS = layers * kvHeads;

/**
 * A stand-in for GPU memory: each pool block holds `blockSize` tags, a tag naming (layer, head, position).
 * Executing plans against it and reading back through the tables checks that copy-on-write and slot indices
 * really put every token where the tables say it is.
 */
class Shadow {
  mem: Record<PoolName, Map<number, Int32Array>> = { full: new Map(), quant: new Map() };
  /** Expected tags per sequence, per layer·kvHeads + head. */
  expected = new Map<number, number[][]>();

  clone(): Shadow {
    const s = new Shadow();
    for (const pool of ['full', 'quant'] as const) {
      for (const [b, v] of this.mem[pool]) s.mem[pool].set(b, v.slice());
    }
    for (const [id, heads] of this.expected) s.expected.set(id, heads.map((h) => [...h]));
    return s;
  }

  /** Block ids are local to a layer's pool: the key names both. */
  block(pool: PoolName, layer: number, b: number): Int32Array {
    const key = layer * 1_000_000 + b;
    let m = this.mem[pool].get(key);
    if (!m) {
      m = new Int32Array(BS).fill(-1);
      this.mem[pool].set(key, m);
    }
    return m;
  }
}

const tag = (layer: number, head: number, pos: number): number => (pos * layers + layer) * kvHeads + head;

function stateKey(meta: CacheMetadata): unknown {
  const s = meta.snapshot();
  return { ...s, sequences: [...s.sequences].sort((a, b) => a[0] - b[0]) };
}

function verifyContents(meta: CacheMetadata, shadow: Shadow): void {
  expect(new Set(meta.sequenceIds())).toEqual(new Set(shadow.expected.keys()));
  for (const [id, heads] of shadow.expected) {
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const want = heads[layer * kvHeads + head]!;
        expect(meta.tokenCount(id, layer, head)).toBe(want.length);
        const entries = meta.headBlocks(id, layer, head);
        const got = want.map((_, i) => {
          const { pool, block } = decodeBlockRef(entries[Math.floor(i / BS)]!);
          return shadow.block(pool, layer, block)[i % BS];
        });
        expect(got, `seq ${id} layer ${layer} head ${head}`).toEqual(want);
      }
    }
  }
}

describe('CacheMetadata randomized operations', () => {
  it.each([1, 2, 3])('keeps every invariant over 2000 random operations (seed %i)', (seed) => {
    const random = prng(seed * 7919);
    const int = (lo: number, hi: number): number => lo + Math.floor(random() * (hi - lo + 1));
    const pick = <T>(xs: readonly T[]): T | undefined => xs[Math.floor(random() * xs.length)];
    const fullBytes = bytesPerBlock(blockLayout('f16', shape));
    const quantBytes = bytesPerBlock(blockLayout('int2', shape, 2));
    const meta = new CacheMetadata({
      shape,
      fullFormat: 'f16',
      quantFormat: 'int2',
      groupSize: 2,
      initialFullBlocks: 20,
      initialQuantBlocks: 6,
      maxBytes: 101 * fullBytes + 41 * quantBytes,
      seqSlots: 5,
      maxBlocksPerHead: 10,
    });
    let shadow = new Shadow();
    let nextId = 100;
    const stats = { add: 0, append: 0, nullAppend: 0, cow: 0, fork: 0, compact: 0, keep: 0, free: 0, grow: 0, refused: 0, rollback: 0 };

    const expectUnchanged = (before: unknown, fn: () => unknown): void => {
      fn();
      expect(stateKey(meta)).toEqual(before);
    };

    const append = (id: number, n: number): void => {
      const before = stateKey(meta);
      // Independent count of the blocks the append needs.
      const need = new Array<number>(layers).fill(0);
      let tooWide = false;
      for (let layer = 0; layer < layers; layer++) {
        for (let head = 0; head < kvHeads; head++) {
          const c = meta.tokenCount(id, layer, head);
          const entries = meta.headBlocks(id, layer, head);
          const room = c % BS === 0 ? 0 : BS - (c % BS);
          const fresh = Math.ceil(Math.max(0, n - room) / BS);
          if (entries.length + fresh > meta.maxBlocksPerHead) tooWide = true;
          const last = entries[entries.length - 1];
          const cow = room > 0 && last !== undefined && meta.pool('full', layer).refCount(decodeBlockRef(last).block) > 1;
          need[layer] = (need[layer] ?? 0) + fresh + (cow ? 1 : 0);
        }
      }
      if (tooWide) {
        expect(() => meta.planAppend(id, n)).toThrow(LimitExceededError);
        expect(stateKey(meta)).toEqual(before);
        stats.refused++;
        return;
      }
      const freeBefore = Array.from({ length: layers }, (_, layer) => meta.pool('full', layer).numFree);
      const plan = meta.planAppend(id, n);
      if (plan === null) {
        // All or nothing: some layer's pool is short, and no layer took a block.
        expect(need.some((k, layer) => k > (freeBefore[layer] ?? 0))).toBe(true);
        expect(stateKey(meta)).toEqual(before);
        stats.nullAppend++;
        return;
      }
      for (let layer = 0; layer < layers; layer++) {
        expect(plan.allocated[layer]!.length).toBe(need[layer]);
        expect(new Set(plan.allocated[layer]).size).toBe(need[layer]);
        expect(meta.pool('full', layer).numFree).toBe(freeBefore[layer]! - need[layer]!);
      }
      stats.append++;
      // Run the "GPU" part: copies first, then the scatter.
      for (const c of plan.copies) {
        shadow.block(c.pool, c.layer, c.dst).set(shadow.block(c.pool, c.layer, c.src));
        stats.cow++;
      }
      const heads = shadow.expected.get(id)!;
      for (let layer = 0; layer < layers; layer++) {
        for (let t = 0; t < n; t++) {
          for (let head = 0; head < kvHeads; head++) {
            const s = plan.destSlots[(layer * n + t) * kvHeads + head]!;
            shadow.block('full', layer, Math.floor(s / BS))[s % BS] = tag(layer, head, plan.firstPosition + t);
          }
        }
      }
      for (let layer = 0; layer < layers; layer++) {
        for (let head = 0; head < kvHeads; head++) {
          for (let t = 0; t < n; t++) heads[layer * kvHeads + head]!.push(tag(layer, head, plan.firstPosition + t));
        }
      }
    };

    const compact = (id: number): void => {
      const layer = int(0, layers - 1);
      const head = int(0, kvHeads - 1);
      const want = shadow.expected.get(id)![layer * kvHeads + head]!;
      const old = meta.headBlocks(id, layer, head);
      const before = stateKey(meta);
      const snapBefore = meta.snapshot();
      const freeFullBefore = meta.pool('full', layer).numFree;
      if (random() < 0.3) {
        // Truncate in place: keep a prefix of the old blocks (shared ones included).
        const j = int(0, old.length);
        const lastKept = old[j - 1];
        let count = 0;
        if (j > 0) {
          count = decodeBlockRef(lastKept!).pool === 'quant' ? j * BS : int((j - 1) * BS + 1, Math.min(j * BS, want.length));
        }
        const dropped = old.slice(j).filter((e) => {
          const { pool, block } = decodeBlockRef(e);
          return pool === 'full' && meta.pool('full', layer).refCount(block) === 1;
        }).length;
        meta.replaceHeadBlocks(id, layer, head, old.slice(0, j), count);
        expect(meta.pool('full', layer).numFree).toBe(freeFullBefore + dropped);
        want.length = count;
        stats.keep++;
        return;
      }
      // Evict a random subset and re-store it: whole quantized blocks first, the rest in full blocks.
      const kept = want.filter(() => random() < 0.7);
      const k = kept.length;
      const qn = int(0, Math.floor(k / BS));
      const fn = Math.ceil((k - qn * BS) / BS);
      const qBlocks = meta.allocateBlocks('quant', layer, qn);
      if (qBlocks === null) {
        expect(stateKey(meta)).toEqual(before);
        stats.refused++;
        return;
      }
      const fBlocks = meta.allocateBlocks('full', layer, fn);
      if (fBlocks === null || qn + fn > meta.maxBlocksPerHead) {
        // Releasing gives the memory back but puts the blocks at the LRU tail; restore() is the exact undo.
        const freeQuant = meta.pool('quant', layer).numFree;
        meta.releaseBlocks('quant', layer, qBlocks);
        if (fBlocks) meta.releaseBlocks('full', layer, fBlocks);
        expect(meta.pool('quant', layer).numFree).toBe(freeQuant + qn);
        expect(meta.pool('full', layer).numFree).toBe(freeFullBefore);
        meta.restore(snapBefore);
        expect(stateKey(meta)).toEqual(before);
        stats.refused++;
        return;
      }
      const entries = [...qBlocks.map((b) => encodeBlockRef('quant', b)), ...fBlocks.map((b) => encodeBlockRef('full', b))];
      kept.forEach((tagValue, i) => {
        const { pool, block } = decodeBlockRef(entries[Math.floor(i / BS)]!);
        shadow.block(pool, layer, block)[i % BS] = tagValue;
      });
      // Every so often hand in a bad list first: it must be refused with nothing changed.
      if (random() < 0.1 && entries.length > 0) {
        const snap = stateKey(meta);
        expect(() => meta.replaceHeadBlocks(id, layer, head, [...entries, entries[0]!], k + BS)).toThrow(InvalidArgumentError);
        expect(stateKey(meta)).toEqual(snap);
      }
      meta.replaceHeadBlocks(id, layer, head, entries, k);
      shadow.expected.get(id)![layer * kvHeads + head] = kept;
      stats.compact++;
    };

    for (let step = 0; step < 2000; step++) {
      const ids = meta.sequenceIds();
      const id = pick(ids);
      const r = random();
      const before = stateKey(meta);
      if (r < 0.1 || id === undefined) {
        const newId = nextId++;
        if (meta.freeSlotCount === 0) {
          expectUnchanged(before, () => expect(() => meta.addSequence(newId)).toThrow(LimitExceededError));
        } else {
          meta.addSequence(newId);
          shadow.expected.set(newId, Array.from({ length: HEADS }, () => []));
          stats.add++;
        }
      } else if (r < 0.25) {
        append(id, int(1, 3 * BS + 3));
      } else if (r < 0.55) {
        append(id, 1);
      } else if (r < 0.62) {
        const newId = nextId++;
        if (meta.freeSlotCount === 0) {
          expectUnchanged(before, () => expect(() => meta.fork(id, newId)).toThrow(LimitExceededError));
        } else {
          const refsBefore = meta.poolUsage('full').used;
          meta.fork(id, newId);
          expect(meta.poolUsage('full').used).toBe(refsBefore); // sharing costs no block
          shadow.expected.set(newId, shadow.expected.get(id)!.map((h) => [...h]));
          stats.fork++;
        }
      } else if (r < 0.8) {
        compact(id);
      } else if (r < 0.9) {
        // Freed memory returns: every block only this sequence holds goes back to its pool.
        const own: Record<PoolName, Map<number, number>> = { full: new Map(), quant: new Map() };
        for (let layer = 0; layer < layers; layer++) {
          for (let head = 0; head < kvHeads; head++) {
            for (const e of meta.headBlocks(id, layer, head)) {
              const { pool, block } = decodeBlockRef(e);
              const key = layer * 1_000_000 + block;
              own[pool].set(key, (own[pool].get(key) ?? 0) + 1);
            }
          }
        }
        const freed = (pool: PoolName): number =>
          [...own[pool]].filter(([key, c]) => meta.pool(pool, Math.floor(key / 1_000_000)).refCount(key % 1_000_000) === c).length;
        const expectFull = meta.poolUsage('full').free + freed('full');
        const expectQuant = meta.poolUsage('quant').free + freed('quant');
        meta.freeSequence(id);
        expect(meta.poolUsage('full').free).toBe(expectFull);
        expect(meta.poolUsage('quant').free).toBe(expectQuant);
        shadow.expected.delete(id);
        stats.free++;
      } else if (r < 0.95) {
        const pool: PoolName = random() < 0.7 ? 'full' : 'quant';
        const n = int(1, 6);
        const layer = int(0, layers - 1);
        if (n > meta.growableBlocks(pool)) {
          expectUnchanged(before, () => expect(() => meta.growPool(pool, layer, n)).toThrow(LimitExceededError));
          stats.refused++;
        } else {
          const free = meta.pool(pool, layer).numFree;
          const other = meta.pool(pool, 1 - layer).numFree;
          meta.growPool(pool, layer, n);
          expect(meta.pool(pool, layer).numFree).toBe(free + n);
          expect(meta.pool(pool, 1 - layer).numFree).toBe(other); // another layer's pool is untouched
          stats.grow++;
        }
      } else {
        // A multi-step operation whose GPU part "fails": roll back exactly.
        const savedShadow = shadow.clone();
        const snap = meta.snapshot();
        append(id, int(1, 6));
        compact(id);
        if (random() < 0.5) meta.freeSequence(id);
        meta.restore(snap);
        shadow = savedShadow;
        expect(stateKey(meta)).toEqual(before);
        stats.rollback++;
      }
      const problems = checkInvariants(meta);
      expect(problems, `after step ${step}`).toEqual([]);
      verifyContents(meta, shadow);
      expect(meta.bytesAllocated).toBeLessThanOrEqual(meta.maxBytes);
    }
    // The run must actually have exercised the interesting paths.
    expect(stats.cow).toBeGreaterThan(20);
    expect(stats.nullAppend).toBeGreaterThan(0);
    expect(stats.compact).toBeGreaterThan(50);
    expect(stats.keep).toBeGreaterThan(20);
    expect(stats.fork).toBeGreaterThan(20);
    expect(stats.free).toBeGreaterThan(20);
    expect(stats.rollback).toBeGreaterThan(20);
    const u = utilisationReport(meta);
    expect(u.total.slotsUsed).toBeLessThanOrEqual(u.total.slotsAllocated);
  });
});
