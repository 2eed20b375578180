// The context store on the CPU (no GPU): how long a lookup takes per 1K prompt tokens (hashing the chain and one
// index look-up per tier), how fast a tier restores an entry (read + the strict reader's checksum and copies)
// against a plain read of the same bytes, and what 8 concurrent clients of one store get. The directory tier lives
// in src/node, above this layer: the CLI passes it in (src/cli/bench-store.ts); without it the suite measures
// memory only.
import { ContextStore } from '../../store/context-store.js';
import type { ContextStream } from '../../store/context-stream.js';
import { encodeStoreEntry, type StoreEntry } from '../../store/entry-format.js';
import type { StoreNamespace } from '../../store/keys.js';
import { MemoryTier } from '../../store/memory-tier.js';
import type { StoreTier } from '../../store/tier.js';
import { mulberry32 } from '../../random.js';
import type { BenchSettings, BenchSuite, BenchTable } from '../harness.js';
import { median, quantile } from '../stats.js';
import { formatBytes, trimNumber } from '../units.js';

/** A persistent tier to measure, and a plain read of the same kind of storage to compare it with. */
export interface StoreBenchDirectory {
  /** Opens an empty tier (the suite saves into it). */
  open(): Promise<StoreTier>;
  /** Stores `bytes` as a plain file and returns a function reading it back (e.g. fs.readFile). */
  plainFile(bytes: Uint8Array): Promise<() => Promise<Uint8Array>>;
  /** Removes what `open` and `plainFile` made. */
  cleanup(): Promise<void>;
}

const BLOCK = 16;
const FINGERPRINT = 'bench:store';
const NAMESPACE: StoreNamespace = {
  modelFingerprint: FINGERPRINT,
  settings: { policy: 'snapkv', budgetMode: 'uniform', budget: 64, bits: 4, sinks: 4, recent: 16, window: 16, decodeSchedule: null },
  tenantSalt: 'bench',
};

function prompt(tokens: number, seed: number): ContextStream {
  const random = mulberry32(seed);
  return [{ kind: 'prefill', tokens: Array.from({ length: tokens }, () => Math.floor(random() * 32_000)) }];
}

function entry(tokenCount: number, bytes: number): StoreEntry {
  const payload = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 4096) payload[i] = i & 0xff;
  return { layoutVersion: 1, shape: { layers: 1 }, settings: null, fingerprint: FINGERPRINT, tokenCount, sections: new Map([['blocks', payload]]) };
}

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await fn();
  return performance.now() - started;
}

async function medianMs(runs: number, fn: () => Promise<unknown>): Promise<number> {
  await fn(); // warm: JIT, page cache
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) samples.push(await timeMs(fn));
  return median(samples);
}

const store = (tiers: StoreTier[]): ContextStore => new ContextStore({ tiers, namespace: NAMESPACE, blockSize: BLOCK });

async function lookupTable(settings: BenchSettings): Promise<BenchTable> {
  const s = store([new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY })]);
  const lengths = settings.quick ? [1024, 8192] : [1024, 4096, 16_384, 65_536];
  const rows = [];
  for (const tokens of lengths) {
    const stream = prompt(tokens, tokens);
    const chainMs = await medianMs(settings.runs, () => s.chain(stream));
    const lookupMs = await medianMs(settings.runs, () => s.lookup(stream)); // a miss: every link checked
    rows.push([tokens, tokens / BLOCK, trimNumber((chainMs * 1000 * 1024) / tokens, 3), trimNumber((lookupMs * 1000 * 1024) / tokens, 3)]);
  }
  return {
    title: `Store lookup cost (block ${BLOCK}, memory tier, a miss checks every link)`,
    columns: ['prompt tokens', 'links', 'chain µs / 1K tokens', 'lookup µs / 1K tokens'],
    rows,
    note: 'chain: the namespace hash (WebCrypto) and the SHA-256 of every link (sha256Sync); lookup: the chain plus one hasMany per tier; medians of wall times.',
  };
}

async function restoreRows(tierName: string, tier: StoreTier, plainRead: (bytes: Uint8Array) => Promise<() => Promise<Uint8Array>>, settings: BenchSettings): Promise<(string | number)[][]> {
  const sizes = settings.quick ? [1 << 20, 16 << 20] : [256 << 10, 1 << 20, 16 << 20, 64 << 20];
  const s = store([tier]);
  const rows: (string | number)[][] = [];
  for (const size of sizes) {
    const stream = prompt(256, size);
    const link = (await s.chain(stream)).links.at(-1);
    if (link === undefined) continue;
    const bytes = await encodeStoreEntry(entry(link.tokens, size));
    await s.save(link, bytes);
    const restoreSamples: number[] = [];
    await s.lookup(stream);
    for (let i = 0; i < settings.runs; i++) {
      const found = await s.lookup(stream);
      if (found.hit) restoreSamples.push(found.restoreMs);
    }
    const read = await plainRead(bytes);
    const plainMs = await medianMs(settings.runs, read);
    const restoreMs = restoreSamples.length > 0 ? median(restoreSamples) : Number.NaN;
    rows.push([tierName, formatBytes(bytes.length), trimNumber(restoreMs, 3), trimNumber(plainMs, 3), trimNumber(plainMs / restoreMs, 3), trimNumber(bytes.length / (restoreMs * 1e6), 3)]);
  }
  return rows;
}

async function concurrencyRow(tierName: string, tiers: StoreTier[], settings: BenchSettings): Promise<(string | number)[]> {
  const s = store(tiers);
  const clients = 8;
  const prompts = Array.from({ length: 32 }, (_, i) => prompt(512, 1000 + i));
  const durationMs = settings.quick ? 500 : 3000;
  const latencies: number[] = [];
  let computes = 0;
  const compute = async (): Promise<StoreEntry> => {
    computes++;
    return entry(512, 64 << 10);
  };
  const deadline = performance.now() + durationMs;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      const random = mulberry32(client + 1);
      while (performance.now() < deadline) {
        // Skewed popularity: a few prompts take most requests, as shared system prompts do.
        const which = Math.floor(prompts.length * random() ** 3);
        latencies.push(await timeMs(() => s.lookupOrCompute(prompts[which] as ContextStream, {}, compute)));
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const stats = await s.stats();
  return [tierName, clients, latencies.length, trimNumber(latencies.length / seconds, 4), trimNumber(quantile(latencies, 0.5) * 1000, 3), trimNumber(quantile(latencies, 0.99) * 1000, 3), computes, trimNumber(stats.hitRate, 3)];
}

const plainCopy = async (bytes: Uint8Array): Promise<() => Promise<Uint8Array>> => async () => bytes.slice();

/**
 * The store suite; `directory` adds the persistent tier's rows (the CLI passes the Node directory tier).
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(null, [storeSuite({ directory })], benchSettings(true));
 * ```
 */
export function storeSuite(options: { readonly directory?: StoreBenchDirectory } = {}): BenchSuite {
  return {
    name: 'store',
    description: 'context store on the CPU: lookup cost per 1K tokens, restore speed of each tier against a plain read, 8 concurrent clients',
    tables: async (settings) => {
      const { directory } = options;
      const restore = await restoreRows('memory', new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY }), plainCopy, settings);
      const concurrent = [await concurrencyRow('memory', [new MemoryTier({ maxBytes: Number.POSITIVE_INFINITY })], settings)];
      if (directory) {
        try {
          restore.push(...(await restoreRows('directory', await directory.open(), (bytes) => directory.plainFile(bytes), settings)));
          const disk = await directory.open();
          // A small memory front (room for 8 of the 32 prompts' entries) over the directory: hits come from both.
          concurrent.push(await concurrencyRow('memory 512 KiB → directory', [new MemoryTier({ name: 'memory', maxBytes: 8 * (65 << 10), next: disk }), disk], settings));
        } finally {
          await directory.cleanup();
        }
      }
      return [
        await lookupTable(settings),
        {
          title: 'Store restore speed against a plain read of the same bytes',
          columns: ['tier', 'entry', 'restore ms', 'plain read ms', 'plain / restore', 'restore GB/s'],
          rows: restore,
          note: 'restore: the tier\'s get plus the strict reader (SHA-256 over the entry, section copies); plain read: a Uint8Array copy (memory) or fs.readFile of a plain file (directory), both warm in the page cache. plain / restore 1 = as fast as a plain read.',
        },
        {
          title: 'Store under 8 concurrent clients (lookupOrCompute over 32 prompts of 512 tokens, 64 KiB entries, skewed popularity)',
          columns: ['tiers', 'clients', 'ops', 'ops/s', 'p50 µs', 'p99 µs', 'computes', 'token hit rate'],
          rows: concurrent,
          note: 'compute returns a prepared entry at once: the figures are the store\'s own cost. computes ≤ 32 shows single flight: each prompt is computed once, however many clients ask for it at once.',
        },
      ];
    },
  };
}

/** The registered suite: memory tier only (the CLI swaps in {@link storeSuite} with the directory tier). */
export const storeBenchSuite: BenchSuite = storeSuite();
