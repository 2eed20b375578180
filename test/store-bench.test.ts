import { describe, expect, it } from 'vitest';
import { storeSuite } from '../src/bench/cases/store.js';
import { benchSettings } from '../src/bench/harness.js';
import { benchDirectory } from '../src/cli/bench-store.js';

describe('store bench suite', () => {
  it('measures lookup per 1K tokens, restore against a plain read for memory and directory, and 8 clients', async () => {
    const settings = { ...benchSettings(true), runs: 2 };
    const tables = await storeSuite({ directory: await benchDirectory() }).tables!(settings);
    expect(tables.map((t) => t.title.split(' ').slice(0, 3).join(' '))).toEqual(['Store lookup cost', 'Store restore speed', 'Store under 8']);
    const [lookup, restore, clients] = tables as [(typeof tables)[0], (typeof tables)[0], (typeof tables)[0]];
    expect(lookup.rows.map((r) => r[0])).toEqual([1024, 8192]);
    for (const row of lookup.rows) expect(Number(row[3])).toBeGreaterThan(0);
    expect(restore.rows.map((r) => r[0])).toEqual(['memory', 'memory', 'directory', 'directory']);
    for (const row of restore.rows) expect(Number(row[4])).toBeGreaterThan(0); // plain / restore, a finite ratio
    expect(clients.rows.map((r) => r[0])).toEqual(['memory', 'memory 512 KiB → directory']);
    for (const row of clients.rows) {
      expect(row[1]).toBe(8);
      const computes = Number(row[6]);
      expect(computes).toBeGreaterThan(0);
      expect(computes).toBeLessThanOrEqual(32); // single flight: each of the 32 prompts at most once
    }
  }, 60_000);
});
