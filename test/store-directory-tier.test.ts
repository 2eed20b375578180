import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LimitExceededError } from '../src/errors.js';
import { openDirectoryTier, TEMP_PREFIX } from '../src/node/directory-tier.js';
import { ContextStore } from '../src/store/context-store.js';
import { encodeStoreEntry } from '../src/store/entry-format.js';
import { entryFileName, parseEntryFileName } from '../src/store/file-tier.js';
import { MemoryTier } from '../src/store/memory-tier.js';
import type { StoreTier } from '../src/store/tier.js';
import { mulberry32 } from '../src/random.js';
import { fakeClock, FINGERPRINT, promptStream, storeNamespace, testEntry } from './helpers/store.js';

const run = promisify(execFile);
const roots: string[] = [];
function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvc-dir-tier-'));
  roots.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of roots) rmSync(dir, { recursive: true, force: true });
});

const bytes = (n: number, fill = 1): Uint8Array => new Uint8Array(n).fill(fill);
const expect_ = { fingerprint: FINGERPRINT, layoutVersion: 1 };

describe('entry file names', () => {
  it('carry key, expiry, pinning and prefill tokens, and refuse what the tier did not write', () => {
    const meta = { key: 'ab12', expiresAtMs: 1234.5, pinned: true, prefillTokens: 96 };
    expect(parseEntryFileName(entryFileName(meta))).toEqual(meta);
    expect(parseEntryFileName(entryFileName({ ...meta, expiresAtMs: null, pinned: false }))).toEqual({ ...meta, expiresAtMs: null, pinned: false });
    for (const name of ['ab12.kvc', 'ab12~n~x~1.kvc', 'a/b~n~u~1.kvc', 'ab~n~u~-1.kvc', 'ab~n~u~1.tmp', '.tmp-123', 'ab~zz~u~1.kvc', 'ab~n~u~.kvc']) {
      expect(parseEntryFileName(name)).toBeNull();
    }
    expect(() => entryFileName({ ...meta, key: '../x' })).toThrow(/must match/);
  });
});

describe('DirectoryTier', () => {
  it('persists entries and their metadata across a reopen, removing leftover temp files', async () => {
    const dir = freshDir();
    const time = fakeClock(1000);
    const tier = await openDirectoryTier({ directory: dir, now: time.now });
    await tier.put('k1', bytes(100, 1), { prefillTokens: 32 });
    await tier.put('k2', bytes(50, 2), { pinned: true, ttlMs: 10 });
    await tier.put('k1', bytes(10, 3), { ttlMs: 500 }); // replaces k1 and its file
    writeFileSync(join(dir, `${TEMP_PREFIX}dead-writer`), bytes(77));
    writeFileSync(join(dir, 'notes.txt'), 'not ours');
    const again = await openDirectoryTier({ directory: dir, now: time.now });
    expect((await again.list()).sort((a, b) => a.key.localeCompare(b.key))).toEqual([
      { key: 'k1', bytes: 10, pinned: false, expiresAtMs: 1500, prefillTokens: 1, hits: 0 },
      { key: 'k2', bytes: 50, pinned: true, expiresAtMs: 1010, prefillTokens: 1, hits: 0 },
    ]);
    expect(Array.from((await again.get('k1'))!)).toEqual(Array.from(bytes(10, 3)));
    const names = readdirSync(dir).sort();
    expect(names.filter((n) => n.startsWith(TEMP_PREFIX))).toEqual([]);
    expect(names.filter((n) => n.endsWith('.kvc')).length).toBe(2);
    expect(names).toContain('notes.txt'); // left alone
  });

  it('expires entries on the injected clock (pinned ones stay), also after a reopen', async () => {
    const dir = freshDir();
    const time = fakeClock();
    const tier = await openDirectoryTier({ directory: dir, now: time.now, defaultTtlMs: 100 });
    await tier.put('short', bytes(4));
    await tier.put('long', bytes(4), { ttlMs: 1000 });
    await tier.put('pinned', bytes(4), { pinned: true });
    time.advance(100);
    expect(await tier.get('short')).toBeNull();
    expect((await tier.stats()).misses.expired).toBe(1);
    const reopened = await openDirectoryTier({ directory: dir, now: time.now });
    expect((await reopened.keys()).sort()).toEqual(['long', 'pinned']);
    time.advance(900);
    expect((await reopened.keys()).sort()).toEqual(['pinned']);
    expect((await reopened.stats()).evictions.ttl).toBe(1);
    expect(readdirSync(dir).length).toBe(1);
  });

  it('evicts in the policy\'s order, never a pinned entry, and demotes to the next tier', async () => {
    const next = new MemoryTier({ name: 'next', maxBytes: Number.POSITIVE_INFINITY });
    const tier = await openDirectoryTier({ directory: freshDir(), maxEntries: 3, eviction: 'lru', next, now: fakeClock().now });
    await tier.put('pin', bytes(8), { pinned: true });
    await tier.put('a', bytes(8));
    await tier.put('b', bytes(8));
    await tier.get('a');
    await tier.put('c', bytes(8));
    expect((await tier.keys()).sort()).toEqual(['a', 'c', 'pin']);
    expect(await next.keys()).toEqual(['b']);
    await tier.put('d', bytes(8));
    expect((await tier.keys()).sort()).toEqual(['c', 'd', 'pin']);
    expect((await next.keys()).sort()).toEqual(['a', 'b']);
    expect((await tier.stats())).toMatchObject({ entries: 3, demotions: 2, pinnedEntries: 1, evictions: { capacity: 2 } });
    const bounded = await openDirectoryTier({ directory: freshDir(), maxBytes: 16 });
    await bounded.put('p', bytes(10), { pinned: true });
    await expect(bounded.put('q', bytes(10), { pinned: true })).rejects.toBeInstanceOf(LimitExceededError);
    expect(await bounded.put('r', bytes(4))).toBe(true);
    expect(await bounded.put('r', bytes(10))).toBe(false); // too large beside the pinned entry
    expect(await bounded.has('r')).toBe(false); // and its old bytes are gone: a replaced entry never lingers
    expect((await bounded.stats()).rejected).toBe(1);
  });

  it('an entry being demoted to a slow next tier stays readable until it lands there', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolveGate) => (release = resolveGate));
    const sink = new MemoryTier({ name: 'sink', maxBytes: Number.POSITIVE_INFINITY });
    const slow: StoreTier = {
      name: 'slow',
      get: (key) => sink.get(key),
      has: (key) => sink.has(key),
      delete: (key) => sink.delete(key),
      keys: () => sink.keys(),
      stats: () => sink.stats(),
      put: async (key, value, options) => {
        await gate;
        return sink.put(key, value, options);
      },
    };
    const tier = await openDirectoryTier({ directory: freshDir(), maxEntries: 1, next: slow });
    await tier.put('old', bytes(4, 5));
    const putting = tier.put('new', bytes(4, 6));
    for (let i = 0; i < 50 && !(await tier.hasMany(['new']))[0]; i++) await new Promise((r) => setTimeout(r, 2));
    expect(await tier.hasMany(['old', 'new'])).toEqual([true, true]);
    expect(Array.from((await tier.get('old'))!)).toEqual([5, 5, 5, 5]);
    expect(await tier.keys()).toEqual(['new']);
    release();
    await putting;
    expect(await tier.has('old')).toBe(false);
    expect(await sink.has('old')).toBe(true);
  });

  it('reopened with lower limits, evicts the least recently used down to them (demoting), pinned ones kept', async () => {
    const dir = freshDir();
    const time = fakeClock();
    const tier = await openDirectoryTier({ directory: dir, now: time.now });
    await tier.put('pin', bytes(8), { pinned: true });
    for (const key of ['a', 'b', 'c', 'd']) await tier.put(key, bytes(8));
    // Recency across a reopen is the files' modification time (set apart here: the kernel's clock is coarse).
    readdirSync(dir).forEach((name) => {
      const at = new Date(Date.UTC(2026, 0, 1, 0, ['pin', 'a', 'b', 'c', 'd'].indexOf(name.split('~')[0]!)));
      utimesSync(join(dir, name), at, at);
    });
    const next = new MemoryTier({ name: 'next', maxBytes: Number.POSITIVE_INFINITY });
    const smaller = await openDirectoryTier({ directory: dir, maxEntries: 3, next, now: time.now });
    expect((await smaller.keys()).sort()).toEqual(['c', 'd', 'pin']);
    expect((await next.keys()).sort()).toEqual(['a', 'b']);
    expect(readdirSync(dir).length).toBe(3);
  });

  it('a corrupt file on disk is a miss with its reason, and is deleted', async () => {
    const dir = freshDir();
    const tier = await openDirectoryTier({ directory: dir });
    const s = new ContextStore({ tiers: [tier], namespace: storeNamespace(), blockSize: 4 });
    const link = (await s.chain(promptStream(8))).links[1]!;
    await s.save(link, testEntry(8));
    const [name] = readdirSync(dir);
    const path = join(dir, name!);
    const onDisk = new Uint8Array(await readFile(path));
    onDisk[onDisk.length - 40] = (onDisk[onDisk.length - 40] as number) ^ 1;
    writeFileSync(path, onDisk);
    const found = await s.lookup(promptStream(8), expect_);
    expect(found.hit).toBe(false);
    if (!found.hit) expect(found.refused).toEqual([{ key: link.key, tier: 'directory', reason: 'checksum' }]);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('1,000 truncated or bit-flipped entry files: 0 crashes, 0 accepted', async () => {
    const dir = freshDir();
    const s0 = new ContextStore({ tiers: [new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY })], namespace: storeNamespace(), blockSize: 4 });
    const random = mulberry32(12);
    const N = 1000;
    for (let i = 0; i < N; i++) {
      const link = (await s0.chain(promptStream(4, 10 * i))).links[0]!;
      const good = await encodeStoreEntry(testEntry(4, i & 0xff, 16 + (i % 48)));
      let bad: Uint8Array;
      const mode = i % 3;
      if (mode === 0) bad = good.slice(0, Math.floor(random() * good.length));
      else {
        bad = good.slice();
        const flips = mode === 1 ? 1 : 1 + Math.floor(random() * 8);
        for (let f = 0; f < flips; f++) {
          const at = Math.floor(random() * bad.length);
          bad[at] = (bad[at] as number) ^ (1 << Math.floor(random() * 8));
        }
        if (bad.every((b, j) => b === good[j])) bad[0] = (bad[0] as number) ^ 1;
      }
      writeFileSync(join(dir, entryFileName({ key: link.key, expiresAtMs: null, pinned: false, prefillTokens: 4 })), bad);
    }
    const tier = await openDirectoryTier({ directory: dir });
    expect((await tier.stats()).entries).toBe(N);
    const s = new ContextStore({ tiers: [tier], namespace: storeNamespace(), blockSize: 4 });
    let accepted = 0;
    for (let i = 0; i < N; i++) if ((await s.lookup(promptStream(4, 10 * i), expect_)).hit) accepted++;
    expect(accepted).toBe(0);
    const stats = await s.stats();
    expect(stats.misses).toBe(N);
    const refused = Object.entries(stats.missReasons).filter(([r]) => r !== 'absent' && r !== 'vanished').reduce((sum, [, n]) => sum + n, 0);
    expect(refused).toBe(N);
    expect(stats.missReasons.checksum + stats.missReasons.length).toBeGreaterThan(N / 2);
    expect(readdirSync(dir)).toEqual([]);
  }, 60_000);
});

describe('DirectoryTier across processes', () => {
  let bundle = '';
  beforeAll(async () => {
    const root = resolve('.');
    const out = freshDir();
    bundle = join(out, 'store-bundle.mjs');
    await build({
      stdin: {
        contents: [
          `export { openDirectoryTier } from ${JSON.stringify(join(root, 'src/node/directory-tier.ts'))};`,
          `export { ContextStore } from ${JSON.stringify(join(root, 'src/store/context-store.ts'))};`,
        ].join('\n'),
        resolveDir: root,
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile: bundle,
      logLevel: 'warning',
    });
  });

  const namespaceJson = JSON.stringify(storeNamespace());
  const script = (dir: string, body: string): string => {
    const path = join(dir, `script-${Math.random().toString(36).slice(2)}.mjs`);
    writeFileSync(
      path,
      `import { openDirectoryTier, ContextStore } from ${JSON.stringify(bundle)};
const directory = process.argv[2];
const tier = await openDirectoryTier({ directory });
const store = new ContextStore({ tiers: [tier], namespace: ${namespaceJson}, blockSize: 4 });
const stream = [{ kind: 'prefill', tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }];
${body}`,
    );
    return path;
  };

  it('a state saved by one process is a hit in the next', async () => {
    const scripts = freshDir();
    const dir = join(freshDir(), 'store');
    const entry = testEntry(10, 42);
    const writer = script(
      scripts,
      `const chain = await store.chain(stream);
const entry = ${JSON.stringify({ ...entry, sections: undefined })};
entry.sections = new Map([['blocks', new Uint8Array(64).fill(42)]]);
await store.save(chain.links.at(-1), entry, { pinned: true });
console.log(JSON.stringify({ saved: chain.links.at(-1).key }));`,
    );
    const reader = script(
      scripts,
      `const found = await store.lookup(stream, { fingerprint: ${JSON.stringify(FINGERPRINT)} });
console.log(JSON.stringify({ hit: found.hit, key: found.key, tokens: found.link?.tokens, tier: found.tier, fill: found.entry?.sections.get('blocks')[0] }));`,
    );
    const saved = JSON.parse((await run('node', [writer, dir])).stdout) as { saved: string };
    const found = JSON.parse((await run('node', [reader, dir])).stdout) as Record<string, unknown>;
    expect(found).toEqual({ hit: true, key: saved.saved, tokens: 10, tier: 'directory', fill: 42 });
  }, 60_000);

  it('a writer killed mid-write leaves no partial entry; the next open cleans up and does not crash', async () => {
    const scripts = freshDir();
    const SIZE = 32 << 20;
    const writer = script(
      scripts,
      `const big = new Uint8Array(${SIZE}).fill(9);
console.log('writing');
await tier.put('big', big);
console.log('done');`,
    );
    let sawTemp = 0;
    for (const delayMs of [0, 1, 3, 6, 10, 20]) {
      const dir = join(freshDir(), 'store');
      const child = spawn('node', [writer, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      await new Promise<void>((resolveKill) => {
        child.stdout.on('data', (chunk: Buffer) => {
          if (chunk.toString().includes('writing')) setTimeout(() => child.kill('SIGKILL'), delayMs);
        });
        child.on('exit', () => resolveKill());
      });
      if (readdirSync(dir).some((n) => n.startsWith(TEMP_PREFIX))) sawTemp++;
      const tier = await openDirectoryTier({ directory: dir });
      expect(readdirSync(dir).some((n) => n.startsWith(TEMP_PREFIX))).toBe(false);
      const got = await tier.get('big');
      if (got !== null) {
        expect(got.length).toBe(SIZE);
        expect(got.every((b) => b === 9)).toBe(true);
      }
    }
    expect(sawTemp).toBeGreaterThan(0); // the kills did land mid-write
  }, 60_000);
});
