// Issue #11: randomized concurrency. Rounds of operations (append, appendBuffers, fork, compress, free, attend over
// at least 4 live sequences) are issued WITHOUT awaiting, in a random interleaving; each is also applied, awaited,
// to a CPU twin in the same call order (the sequential model). After each round the engine under test must equal
// the twin: the same sequences, lengths, per-head token counts, positions and values, the same attend results,
// no invariant violation; at the end freeing everything leaves no block in use.
// Fixed seeds in CI; KVCOMPACT_SOAK=1 runs more rounds with a fresh seed (printed, to replay a failure).
import { describe, expect, it } from 'vitest';
import { SequenceBusyError } from '../src/errors.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import type { CompressOptions } from '../src/compress/options.js';
import { createStorageBuffer } from '../src/gpu/buffers.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { type Engine, OPTIONS, SHAPE, headContents, layerSlice, randomKv, randomQuery } from './helpers/reliability.js';

const SOAK = process.env.KVCOMPACT_SOAK === '1';
const ROUNDS = SOAK ? 40 : 5;
const OPS_PER_ROUND = 210;
const OPTIONS_UNDER_TEST = { ...OPTIONS, quantBits: 8 as const, seqSlots: 48, maxTokensPerHead: 256 };
const MAX_TOKENS = 200;

interface Tally {
  /** The most operations issued and not yet settled at once (how much really overlapped). */
  maxInFlight?: number;
  /** CPU attends refused with SequenceBusyError (the sequence had work in flight). */
  refusedBusy?: number;
  append: number;
  appendBuffers: number;
  fork: number;
  compress: number;
  free: number;
  attend: number;
}

/** A pending check of one attend: the subject's promise and the twin's result at the same point of the order. */
interface AttendCheck {
  readonly result: Promise<{ out: Float32Array }>;
  readonly expected: Float32Array;
  readonly label: string;
}

function total(tally: Tally): number {
  const { maxInFlight: _, refusedBusy: __, ...counts } = tally;
  return Object.values(counts).reduce((a, b) => a + b, 0);
}

function pick<T>(random: () => number, items: readonly T[]): T {
  const item = items[Math.floor(random() * items.length)];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

function longestHead(cache: Engine, seq: number): number {
  let longest = 0;
  for (let layer = 0; layer < SHAPE.layers; layer++) {
    for (let head = 0; head < SHAPE.kvHeads; head++) longest = Math.max(longest, cache.tokenCount(seq, layer, head));
  }
  return longest;
}

/**
 * Runs the rounds on `subject` and returns what ran. The twin decides what is valid (it is the state in call
 * order); the subject gets the same calls un-awaited.
 */
async function interleave(subject: Engine, seed: number): Promise<Tally> {
  const twin = CpuKvCache.create(OPTIONS_UNDER_TEST);
  const random = seededRandom(seed);
  const tally: Tally = { append: 0, appendBuffers: 0, fork: 0, compress: 0, free: 0, attend: 0 };
  const lengths = new Map<number, number>(); // the plainest model: tokens ever appended per live sequence
  let nextId = 0;
  const live: number[] = [];
  const add = (): void => {
    const id = nextId++;
    subject.addSequence(id);
    twin.addSequence(id);
    live.push(id);
    lengths.set(id, 0);
  };
  for (let i = 0; i < 4; i++) add();

  let refused = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const pending: Promise<unknown>[] = [];
    // Rejections are collected after the round; until then they must not count as unhandled.
    const track = <T>(promise: Promise<T>): Promise<T> => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      promise.then(
        () => inFlight--,
        () => inFlight--,
      );
      return promise;
    };
    const attends: AttendCheck[] = [];
    // The round is first decided on the twin (awaited, in call order), then issued to the subject in one
    // synchronous burst, so that every operation of the round is in flight at once.
    const issue: (() => void)[] = [];
    const issuedBefore = total(tally);
    for (let op = 0; total(tally) - issuedBefore < OPS_PER_ROUND; op++) {
      while (live.length < 4) add();
      const seq = pick(random, live);
      const roll = random();
      const label = `round ${round} op ${op} seq ${seq}`;
      if (roll < 0.4) {
        if (longestHead(twin, seq) + 12 > MAX_TOKENS) { // budget 48 ≤ the length here
          const options: CompressOptions = { policy: 'streaming', budget: 48 };
          issue.push(() => pending.push(track(subject.compress(seq, options))));
          await twin.compress(seq, options);
          tally.compress++;
          continue;
        }
        const n = 1 + Math.floor(random() * 12);
        const { keys, values } = randomKv(n, random);
        if (subject instanceof PagedKvCache && random() < 0.4) {
          const gpu = subject.gpu;
          issue.push(() => {
            const k = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'k', layerSlice(keys, l, n)));
            const v = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'v', layerSlice(values, l, n)));
            const done = subject.appendBuffers(seq, k, v, n);
            pending.push(track(done.finally(() => [...k, ...v].forEach((b) => b.destroy()))));
          });
          tally.appendBuffers++;
        } else {
          issue.push(() => pending.push(track(subject.append(seq, keys, values))));
          tally.append++;
        }
        await twin.append(seq, keys, values);
        lengths.set(seq, (lengths.get(seq) ?? 0) + n);
      } else if (roll < 0.55) {
        const length = twin.sequenceLength(seq);
        if (length === 0) continue;
        const options: CompressOptions = {
          policy: pick(random, ['knorm', 'streaming']),
          budget: Math.min(length, 8 + Math.floor(random() * 56)),
          budgetMode: pick(random, ['uniform', 'adakv'] as const),
          bits: pick(random, [16, 8] as const),
        };
        issue.push(() => pending.push(track(subject.compress(seq, options))));
        await twin.compress(seq, options);
        tally.compress++;
      } else if (roll < 0.65) {
        if (live.length >= 7) continue;
        const id = nextId++;
        issue.push(() => pending.push(track(subject.fork(seq, id))));
        await twin.fork(seq, id);
        live.push(id);
        lengths.set(id, lengths.get(seq) ?? 0);
        tally.fork++;
      } else if (roll < 0.75) {
        if (live.length <= 4) continue;
        issue.push(() => pending.push(track(subject.freeSequence(seq))));
        await twin.freeSequence(seq);
        live.splice(live.indexOf(seq), 1);
        lengths.delete(seq);
        tally.free++;
      } else {
        if (twin.sequenceLength(seq) === 0) continue;
        const layer = Math.floor(random() * SHAPE.layers);
        const query = randomQuery(random);
        const expected = twin.attend(seq, layer, query).out;
        issue.push(() => {
          if (subject instanceof PagedKvCache) {
            attends.push({ result: track(subject.attend(seq, layer, query)), expected, label });
            return;
          }
          // The CPU attend is synchronous: on a sequence with work in flight it refuses instead of reading stale state.
          try {
            attends.push({ result: Promise.resolve(subject.attend(seq, layer, query)), expected, label });
          } catch (error) {
            if (!(error instanceof SequenceBusyError)) throw error;
            refused++;
          }
        });
        tally.attend++;
      }
    }
    for (const call of issue) call();
    const outcomes = await Promise.allSettled([...pending, ...attends.map((a) => a.result)]);
    const failures = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
    expect(failures, `round ${round}`).toEqual([]);
    for (const { result, expected, label } of attends) {
      const { out } = await result;
      for (let i = 0; i < out.length; i++) expect(out[i], label).toBeCloseTo(expected[i] ?? Number.NaN, 4);
    }
    // The state equals the sequential model's.
    expect(subject.checkInvariants(), `round ${round}`).toEqual([]);
    for (const seq of live) {
      expect(subject.hasSequence(seq)).toBe(true);
      expect(subject.sequenceLength(seq), `round ${round} seq ${seq}`).toBe(lengths.get(seq));
      expect(twin.sequenceLength(seq)).toBe(lengths.get(seq));
      const got = await headContents(subject, seq);
      const want = await headContents(twin, seq);
      for (const [head, g] of got.entries()) {
        const w = want[head];
        expect(g.positions, `round ${round} seq ${seq} head ${head}`).toEqual(w?.positions);
        for (const [i, value] of g.keys.entries()) expect(value).toBeCloseTo(w?.keys[i] ?? Number.NaN, 5);
        for (const [i, value] of g.values.entries()) expect(value).toBeCloseTo(w?.values[i] ?? Number.NaN, 5);
      }
    }
    for (let id = 0; id < nextId; id++) expect(subject.hasSequence(id), `sequence ${id}`).toBe(live.includes(id));
    expect(subject.memory().usedBytes, `round ${round}`).toBe(twin.memory().usedBytes);
  }
  await Promise.all(live.map((seq) => subject.freeSequence(seq)));
  expect(subject.checkInvariants()).toEqual([]);
  const memory = subject.memory();
  expect(memory.full.used + memory.quant.used).toBe(0);
  expect(memory.usedBytes).toBe(0);
  return { ...tally, maxInFlight, refusedBusy: refused };
}

const seeds = SOAK ? [Date.now() % 1_000_000] : [1101];

describe('randomized interleavings equal the sequential model', () => {
  it.each(seeds)('gpu engine, seed %i', async (seed) => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, OPTIONS_UNDER_TEST);
    try {
      const tally = await interleave(cache, seed);
      console.log(`concurrency gpu seed ${seed}: ${total(tally)} operations ${JSON.stringify(tally)}, 0 violations, 0 blocks in use after freeing`);
      expect(total(tally)).toBeGreaterThanOrEqual(SOAK ? 8000 : 1000);
      expect(Math.min(tally.append, tally.appendBuffers, tally.fork, tally.compress, tally.free, tally.attend)).toBeGreaterThan(0);
      expect(tally.maxInFlight).toBeGreaterThan(100); // the calls really overlapped
    } finally {
      cache.destroy();
    }
  });

  it.each(seeds.map((s) => s + 1))('cpu engine, seed %i', async (seed) => {
    const tally = await interleave(CpuKvCache.create(OPTIONS_UNDER_TEST), seed);
    console.log(`concurrency cpu seed ${seed}: ${total(tally)} operations ${JSON.stringify(tally)}, 0 violations, 0 blocks in use after freeing`);
    expect(total(tally)).toBeGreaterThanOrEqual(SOAK ? 8000 : 1000);
    expect(tally.maxInFlight).toBeGreaterThan(100);
    expect(tally.refusedBusy).toBeLessThan(tally.attend);
  });
});
