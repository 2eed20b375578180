import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { evictionOrder, lfu, lru, priorityDecay, type EvictionCandidate } from '../src/store/eviction.js';
import { MemoryTier, type MemoryTierOptions } from '../src/store/memory-tier.js';
import type { StoreTier } from '../src/store/tier.js';
import { mulberry32 } from '../src/random.js';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);

function tier(options: Partial<MemoryTierOptions> = {}, time = clock()): MemoryTier {
  return new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY, now: time.now, ...options });
}

async function sortedKeys(t: MemoryTier): Promise<string[]> {
  return (await t.keys()).sort();
}

describe('eviction policies', () => {
  it('lru evicts the least recently used (a hit refreshes)', async () => {
    const t = tier({ maxEntries: 3, eviction: 'lru' });
    for (const key of ['a', 'b', 'c']) await t.put(key, bytes(1));
    await t.get('a');
    await t.put('d', bytes(1));
    expect(await sortedKeys(t)).toEqual(['a', 'c', 'd']);
    await t.put('e', bytes(1));
    expect(await sortedKeys(t)).toEqual(['a', 'd', 'e']);
  });

  it('lfu evicts the fewest hits, least recently used among equals', async () => {
    const t = tier({ maxEntries: 3, eviction: 'lfu' });
    for (const key of ['a', 'b', 'c']) await t.put(key, bytes(1));
    for (const key of ['a', 'a', 'a', 'b', 'c', 'c']) await t.get(key);
    await t.put('d', bytes(1));
    expect(await sortedKeys(t)).toEqual(['a', 'c', 'd']);
    await t.put('e', bytes(1)); // d has no hit yet: it goes before c (2 hits)
    expect(await sortedKeys(t)).toEqual(['a', 'c', 'e']);
    const ties = tier({ maxEntries: 2, eviction: 'lfu' });
    await ties.put('x', bytes(1));
    await ties.put('y', bytes(1));
    await ties.put('z', bytes(1));
    expect(await sortedKeys(ties)).toEqual(['y', 'z']);
  });

  it('priority-decay ranks by (hits + 1) × prefillTokens × 2^(−age / halfLife) / bytes', () => {
    const halfLifeMs = 1000;
    const now = 10_000;
    const candidates: EvictionCandidate[] = [
      { key: 'hot-small', bytes: 100, hits: 9, lastUsedMs: 9_000, useOrder: 1, prefillTokens: 100 },
      { key: 'cold-large', bytes: 10_000, hits: 1, lastUsedMs: 9_500, useOrder: 2, prefillTokens: 100 },
      { key: 'old-popular', bytes: 100, hits: 99, lastUsedMs: 0, useOrder: 3, prefillTokens: 100 },
      { key: 'long-prefix', bytes: 1_000, hits: 0, lastUsedMs: 10_000, useOrder: 4, prefillTokens: 4_000 },
      { key: 'fresh', bytes: 1_000, hits: 0, lastUsedMs: 10_000, useOrder: 5, prefillTokens: 16 },
    ];
    const priority = (c: EvictionCandidate): number => ((c.hits + 1) * c.prefillTokens * 2 ** (-(now - c.lastUsedMs) / halfLifeMs)) / c.bytes;
    const expected = [...candidates].sort((a, b) => priority(a) - priority(b)).map((c) => c.key);
    const order = evictionOrder(candidates, priorityDecay({ halfLifeMs }), now).map((c) => c.key);
    expect(order).toEqual(expected);
    // priorities: old-popular 9.8e-2, cold-large 1.4e-2, fresh 1.6e-2, hot-small 5, long-prefix 4
    expect(order).toEqual(['cold-large', 'fresh', 'old-popular', 'long-prefix', 'hot-small']);
  });

  it('priority-decay keeps its order after idle times that underflow 2^(−age / halfLife)', () => {
    const candidates: EvictionCandidate[] = [
      { key: 'many-hits', bytes: 10, hits: 50, lastUsedMs: 0, useOrder: 1, prefillTokens: 10 },
      { key: 'few-hits', bytes: 10, hits: 1, lastUsedMs: 0, useOrder: 2, prefillTokens: 10 },
    ];
    expect(evictionOrder(candidates, priorityDecay({ halfLifeMs: 1 }), 1e7).map((c) => c.key)).toEqual(['few-hits', 'many-hits']);
  });

  it('priority-decay in a tier: an entry unused for a few half-lives goes before a fresh one', async () => {
    const time = clock();
    const t = tier({ maxEntries: 2, eviction: priorityDecay({ halfLifeMs: 1000 }) }, time);
    await t.put('popular', bytes(10), { prefillTokens: 64 });
    for (let i = 0; i < 7; i++) await t.get('popular'); // priority 8 × 64 / 10
    await t.put('new', bytes(10), { prefillTokens: 64 }); // 1 × 64 / 10
    time.advance(2000);
    await t.put('newer', bytes(10), { prefillTokens: 64 }); // popular: 8/4 = 2 ×; new: 1/4 ×: new goes
    expect(await sortedKeys(t)).toEqual(['newer', 'popular']);
    time.advance(4000); // both decay, popular for 6 half-lives, newer for 4
    await t.put('newest', bytes(10), { prefillTokens: 64 }); // popular 8 × 2^-6 = 0.125, newer 2^-4 = 0.0625: newer goes
    expect(await sortedKeys(t)).toEqual(['newest', 'popular']);
    time.advance(5000); // popular 8 × 2^-11 < newest 2^-5
    await t.put('last', bytes(10), { prefillTokens: 64 });
    expect(await sortedKeys(t)).toEqual(['last', 'newest']);
  });

  it('ties go least recently used first under every policy', () => {
    const candidates: EvictionCandidate[] = [2, 0, 1].map((useOrder) => ({ key: `k${useOrder}`, bytes: 8, hits: 0, lastUsedMs: 0, useOrder, prefillTokens: 1 }));
    for (const policy of [lru, lfu, priorityDecay()]) expect(evictionOrder(candidates, policy, 0).map((c) => c.key)).toEqual(['k0', 'k1', 'k2']);
  });

  it('refuses a bad half-life or policy name', () => {
    expect(() => priorityDecay({ halfLifeMs: 0 })).toThrow(InvalidArgumentError);
    expect(() => tier({ eviction: 'fifo' as 'lru' })).toThrow(/unknown policy/);
  });
});

describe('the memory tier', () => {
  it('stays within maxBytes, evicting as many entries as a large one needs', async () => {
    const t = tier({ maxBytes: 100 });
    for (const key of ['a', 'b', 'c']) expect(await t.put(key, bytes(30))).toBe(true);
    expect(await t.put('big', bytes(70))).toBe(true);
    expect(await sortedKeys(t)).toEqual(['big', 'c']);
    expect((await t.stats()).bytes).toBe(100);
    await t.put('c', bytes(5)); // a replacement: no eviction
    expect((await t.stats()).bytes).toBe(75);
    expect((await t.stats()).evictions.capacity).toBe(2);
  });

  it('returns the stored bytes on a hit and null on a miss', async () => {
    const t = tier();
    const stored = bytes(4, 7);
    await t.put('k', stored);
    expect(await t.get('k')).toBe(stored);
    expect(await t.get('other')).toBeNull();
    expect(await t.has('k')).toBe(true);
    expect(await t.has('other')).toBe(false);
  });

  it('expires entries by TTL on the injected clock: default, per entry, and never', async () => {
    const time = clock();
    const t = tier({ defaultTtlMs: 1000 }, time);
    await t.put('default', bytes(1));
    await t.put('long', bytes(1), { ttlMs: 5000 });
    await t.put('forever', bytes(1), { ttlMs: null });
    time.advance(999);
    expect(await t.get('default')).not.toBeNull(); // a hit does not extend a TTL
    time.advance(1);
    expect(await t.has('default')).toBe(false);
    expect(await t.get('default')).toBeNull();
    expect(await sortedKeys(t)).toEqual(['forever', 'long']);
    time.advance(4000);
    expect(await sortedKeys(t)).toEqual(['forever']);
    time.advance(1e9);
    expect(await t.get('forever')).not.toBeNull();
    const stats = await t.stats();
    expect(stats.misses).toEqual({ absent: 0, expired: 1 });
    expect(stats.evictions).toEqual({ ttl: 2, capacity: 0, explicit: 0 });
    expect(() => tier({ defaultTtlMs: 0 })).toThrow(InvalidArgumentError);
    await expect(t.put('x', bytes(1), { ttlMs: -5 })).rejects.toThrow(InvalidArgumentError);
  });

  it('never evicts a pinned entry, for room or by TTL, until it is unpinned', async () => {
    const time = clock();
    const t = tier({ maxEntries: 2, defaultTtlMs: 100 }, time);
    await t.put('pinned', bytes(1), { pinned: true });
    for (const key of ['a', 'b', 'c']) await t.put(key, bytes(1));
    expect(await sortedKeys(t)).toEqual(['c', 'pinned']);
    time.advance(1000);
    expect(await sortedKeys(t)).toEqual(['pinned']);
    expect((await t.stats()).pinnedEntries).toBe(1);
    expect(await t.setPinned('pinned', false)).toBe(true);
    expect(await t.get('pinned')).toBeNull(); // its TTL ran out while pinned
    expect(await t.setPinned('gone', true)).toBe(false);
  });

  it('refuses a pinned entry that does not fit beside the pinned ones, and hands on an unpinned one', async () => {
    const second = tier({ name: 'second' });
    const t = tier({ maxBytes: 100, next: second });
    await t.put('p1', bytes(60), { pinned: true });
    await expect(t.put('p2', bytes(50), { pinned: true })).rejects.toThrow(LimitExceededError);
    await t.put('p1', bytes(90), { pinned: true }); // replacing a pinned entry frees its own room
    await t.put('small', bytes(10));
    expect(await t.put('large', bytes(20))).toBe(false);
    expect(await second.keys()).toEqual(['large']);
    expect(await sortedKeys(t)).toEqual(['p1', 'small']);
    const stats = await t.stats();
    expect(stats.rejected).toBe(1);
    expect(stats.pinnedBytes).toBe(90);
    await expect(tier({ maxEntries: 1 }).put('k', bytes(1), { pinned: true })).resolves.toBe(true);
  });

  it('demotes entries evicted for room into the next tier, with their remaining TTL; TTL and delete drop', async () => {
    const time = clock();
    const second = tier({ name: 'second', maxBytes: 1000 }, time);
    const t = tier({ maxBytes: 100, next: second, defaultTtlMs: 10_000 }, time);
    await t.put('a', bytes(50, 1), { prefillTokens: 256 });
    time.advance(4000);
    await t.put('b', bytes(50, 2));
    await t.put('c', bytes(50, 3)); // evicts a into second, with 6 s left
    expect(await t.has('a')).toBe(false);
    expect(await second.get('a')).toEqual(bytes(50, 1));
    await t.delete('b'); // explicit: not demoted
    expect(await second.has('b')).toBe(false);
    time.advance(5999);
    expect(await second.has('a')).toBe(true);
    time.advance(1);
    expect(await second.has('a')).toBe(false);
    time.advance(10_000);
    expect(await t.keys()).toEqual([]); // c expired: dropped, not demoted
    expect(await second.keys()).toEqual([]);
    const stats = await t.stats();
    expect(stats.demotions).toBe(1);
    expect(stats.evictions).toEqual({ ttl: 1, capacity: 1, explicit: 1 });
  });

  it('cascades demotion down a chain of tiers', async () => {
    const third = tier({ name: 'third' });
    const second = tier({ name: 'second', maxEntries: 1, next: third });
    const first = tier({ maxEntries: 1, next: second });
    for (const key of ['a', 'b', 'c']) await first.put(key, bytes(1));
    expect([await first.keys(), await second.keys(), await third.keys()]).toEqual([['c'], ['b'], ['a']]);
  });

  it('counts entries, bytes, hits, misses by reason and evictions by reason', async () => {
    const time = clock();
    const t = tier({ maxBytes: 20, defaultTtlMs: 50 }, time);
    await t.put('a', bytes(10));
    await t.put('b', bytes(10), { ttlMs: null, pinned: true });
    await t.get('a');
    await t.get('b');
    await t.get('nope');
    await t.put('c', bytes(10)); // evicts a (capacity)
    time.advance(50);
    await t.get('c'); // expired
    await t.put('d', bytes(5));
    await t.delete('d');
    await t.delete('d');
    expect(await t.stats()).toEqual({
      entries: 1,
      bytes: 10,
      pinnedEntries: 1,
      pinnedBytes: 10,
      hits: 2,
      misses: { absent: 1, expired: 1 },
      evictions: { ttl: 1, capacity: 1, explicit: 1 },
      demotions: 0,
      rejected: 0,
    });
    expect(await t.clear()).toBe(1);
    expect((await t.stats()).entries).toBe(0);
    expect((await t.stats()).evictions.explicit).toBe(2);
  });

  it('keeps its limits and counts under 400 un-awaited operations with a slow next tier', async () => {
    const random = mulberry32(5);
    const slowPuts: string[] = [];
    const sink = tier({ name: 'sink' });
    const slow: StoreTier = {
      name: 'slow',
      get: (key) => sink.get(key),
      has: (key) => sink.has(key),
      delete: (key) => sink.delete(key),
      keys: () => sink.keys(),
      stats: () => sink.stats(),
      put: async (key, stored, options) => {
        await new Promise((resolve) => setTimeout(resolve, random() * 2));
        slowPuts.push(key);
        return sink.put(key, stored, options);
      },
    };
    const t = tier({ maxBytes: 200, maxEntries: 8, next: slow });
    const operations: Promise<unknown>[] = [];
    for (let i = 0; i < 400; i++) {
      const key = `k${Math.floor(random() * 20)}`;
      const r = random();
      if (r < 0.5) operations.push(t.put(key, bytes(1 + Math.floor(random() * 60))));
      else if (r < 0.9) operations.push(t.get(key));
      else operations.push(t.delete(key));
    }
    await Promise.all(operations);
    const stats = await t.stats();
    let held = 0;
    for (const key of await t.keys()) held += ((await t.get(key)) as Uint8Array).length;
    expect(stats.bytes).toBe(held);
    expect(stats.bytes).toBeLessThanOrEqual(200);
    expect(stats.entries).toBeLessThanOrEqual(8);
    expect(stats.demotions).toBe(stats.evictions.capacity);
    expect(slowPuts.length).toBe(stats.demotions + stats.rejected);
    expect(stats.demotions).toBeGreaterThan(0);
  });

  it('refuses bad limits, keys and prefill counts', async () => {
    expect(() => tier({ maxBytes: -1 })).toThrow(InvalidArgumentError);
    expect(() => tier({ maxEntries: 1.5 })).toThrow(InvalidArgumentError);
    await expect(tier().put('', bytes(1))).rejects.toThrow(InvalidArgumentError);
    await expect(tier().put('k', bytes(1), { prefillTokens: -1 })).rejects.toThrow(InvalidArgumentError);
  });
});

describe('demotion in flight', () => {
  it('an entry being handed to a slow next tier is still readable here until it lands there', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = new MemoryTier({ name: 'slow', maxBytes: Number.POSITIVE_INFINITY });
    const slowPut = slow.put.bind(slow);
    const next: StoreTier = {
      name: 'slow',
      get: (key) => slow.get(key),
      has: (key) => slow.has(key),
      delete: (key) => slow.delete(key),
      keys: () => slow.keys(),
      stats: () => slow.stats(),
      put: async (key, value, options) => {
        await gate;
        return slowPut(key, value, options);
      },
    };
    const t = new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY, maxEntries: 1, next });
    await t.put('old', bytes(4, 5));
    const putting = t.put('new', bytes(4, 6));
    await Promise.resolve();
    expect(await t.has('old')).toBe(true);
    expect(await t.hasMany(['old', 'new', 'none'])).toEqual([true, true, false]);
    expect(Array.from((await t.get('old'))!)).toEqual([5, 5, 5, 5]);
    expect(await t.keys()).toEqual(['new']); // not an entry of this tier any more
    release();
    await putting;
    expect(await t.has('old')).toBe(false);
    expect(await slow.has('old')).toBe(true);
  });
});
