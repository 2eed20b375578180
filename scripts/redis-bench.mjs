// `npm run bench:redis`: the Redis tier under load on loopback, bounded, stopping by itself. Starts its own
// redis-server on a free port (no persistence), then:
//   1. 16 concurrent clients (one RedisTier each, as 16 processes would) × 200 mixed operations: a lookup is a
//      chain's hasMany plus a get of its longest present key, checked byte for byte against what was saved; a
//      save is a put and a flush. Throughput, p50 and p99 latency, errors, wrong data.
//   2. Save and restore MB/s of 1 MiB entries through the tier against raw SET/GET of the same bytes with a bare
//      node-redis client, one at a time.
// Needs dist/ (the npm script builds it) and redis-server (`npm run setup`).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, RESP_TYPES } from 'redis';
import { encodeStoreEntry, groupedKey, openRedisTier } from '../dist/node.js';

const CLIENTS = Number(process.env.CLIENTS ?? 16);
const OPS = Number(process.env.OPS ?? 200);
const ENTRY_BYTES = Number(process.env.ENTRY_BYTES ?? 64 << 10);
const CHAIN = 4;
const GROUPS = 32;
const BIG = 1 << 20;
const BIG_COUNT = Number(process.env.BIG_COUNT ?? 48);

if (spawnSync('sh', ['-c', 'command -v redis-server']).status !== 0) {
  console.error('redis-server is not installed: run `npm run setup` (as root on Debian/Ubuntu) or install redis-server.');
  process.exit(1);
}

const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });

async function waitForPort(port) {
  for (let i = 0; i < 250; i++) {
    const open = await new Promise((resolve) => {
      const socket = new Socket();
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => (socket.destroy(), resolve(false)));
      socket.connect(port, '127.0.0.1');
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server did not start on ${port}`);
}

/** Deterministic bytes for a (group, link) pair: a reader knows what it must get back. */
function payload(group, link, size) {
  const out = new Uint8Array(size);
  let x = (group * 7919 + link * 104729 + 1) >>> 0;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
    out[i + 1] = (x >>> 8) & 0xff;
    out[i + 2] = (x >>> 16) & 0xff;
    out[i + 3] = (x >>> 24) & 0xff;
  }
  return out;
}

const entryOf = (group, link, size) =>
  encodeStoreEntry({
    layoutVersion: 1, shape: { layers: 1, kvHeads: 1, headDim: 8, blockSize: 16 }, settings: { group, link },
    fingerprint: 'bench', tokenCount: 16 * (link + 1), sections: new Map([['blocks', payload(group, link, size)]]),
  });

const digest = (bytes) => createHash('sha256').update(bytes).digest('hex');
const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
const mb = (bytes, ms) => bytes / (1 << 20) / (ms / 1000);

const port = await freePort();
const dir = mkdtempSync(join(tmpdir(), 'kvc-redis-bench-'));
const server = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
const url = `redis://127.0.0.1:${port}`;
try {
  await waitForPort(port);
  const groupHex = (g) => createHash('sha256').update(`namespace-${g}`).digest('hex');
  const keyOf = (g, link) => groupedKey(groupHex(g), createHash('sha256').update(`${g}/${link}`).digest('hex'));

  // Expected bytes of every (group, link), encoded once (the encoding is deterministic).
  const expected = new Map();
  for (let g = 0; g < GROUPS; g++) for (let l = 0; l < CHAIN; l++) expected.set(keyOf(g, l), digest(await entryOf(g, l, ENTRY_BYTES)));
  const entries = new Map();
  for (let g = 0; g < GROUPS; g++) for (let l = 0; l < CHAIN; l++) entries.set(keyOf(g, l), await entryOf(g, l, ENTRY_BYTES));

  const tiers = await Promise.all(Array.from({ length: CLIENTS }, () => openRedisTier(url, { waitMs: 3000, operationTimeoutMs: 2000 })));
  let errors = 0;
  let wrong = 0;
  let hits = 0;
  let lookups = 0;
  let saves = 0;
  const latencies = [];
  const started = performance.now();
  await Promise.all(
    tiers.map(async (tier, c) => {
      let seed = c + 1;
      const rand = (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
      for (let op = 0; op < OPS; op++) {
        const g = rand(GROUPS);
        const t0 = performance.now();
        try {
          if (rand(100) < 40) {
            const link = rand(CHAIN);
            const key = keyOf(g, link);
            if (!(await tier.put(key, entries.get(key)))) errors++;
            await tier.flush();
            saves++;
          } else {
            const keys = Array.from({ length: CHAIN }, (_, l) => keyOf(g, l));
            const present = await tier.hasMany(keys);
            const longest = present.lastIndexOf(true);
            lookups++;
            if (longest >= 0) {
              const bytes = await tier.get(keys[longest]);
              if (bytes === null) errors++; // present a moment ago, nothing deletes or evicts here
              else if (digest(bytes) !== expected.get(keys[longest])) wrong++;
              else hits++;
            }
          }
        } catch (error) {
          errors++;
          console.error(error);
        }
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = performance.now() - started;
  for (const tier of tiers) {
    const stats = await tier.stats();
    errors += Object.values(stats.failures).reduce((a, b) => a + b, 0) + stats.rejected + stats.connectionErrors;
  }
  await Promise.all(tiers.map((tier) => tier.close()));
  latencies.sort((a, b) => a - b);
  console.log(`load: ${CLIENTS} clients × ${OPS} ops (${lookups} lookups, ${hits} hits, ${saves} saves of ${(ENTRY_BYTES / 1024).toFixed(0)} KiB entries), loopback`);
  console.log(`  throughput ${((CLIENTS * OPS) / (elapsed / 1000)).toFixed(0)} ops/s, p50 ${percentile(latencies, 50).toFixed(2)} ms, p99 ${percentile(latencies, 99).toFixed(2)} ms, errors ${errors}, wrong data ${wrong}`);

  // Save and restore MB/s against raw SET/GET of the same bytes.
  const big = [];
  for (let i = 0; i < BIG_COUNT; i++) big.push(await entryOf(1000 + i, 0, BIG));
  const bytesTotal = big.reduce((n, b) => n + b.length, 0);
  const raw = createClient({ url });
  raw.on('error', () => {});
  await raw.connect();
  const tier = await openRedisTier(url, { waitMs: 3000, operationTimeoutMs: 5000, keyPrefix: 'big' });
  const unverified = await openRedisTier(url, { waitMs: 3000, operationTimeoutMs: 5000, keyPrefix: 'big', verifyEntries: false });
  const time = async (fn) => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  // Rounds interleave raw and tier passes and report medians: on a shared machine, a neighbour's burst then hits
  // both sides alike instead of whichever ran at that moment.
  const rounds = 7;
  for (let i = 0; i < 4; i++) {
    await raw.set('warm', Buffer.from(big[i].buffer, big[i].byteOffset, big[i].byteLength));
    await tier.put('warm', big[i]);
    await tier.flush();
  }
  const rawClient = raw.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
  let restoredWrong = 0;
  const passes = {
    rawSet: async () => {
      for (let i = 0; i < big.length; i++) await raw.set(`raw:${i}`, Buffer.from(big[i].buffer, big[i].byteOffset, big[i].byteLength));
    },
    tierSave: async () => {
      for (let i = 0; i < big.length; i++) {
        await tier.put(`big-${i}`, big[i]);
        await tier.flush();
      }
    },
    rawGet: async () => {
      for (let i = 0; i < big.length; i++) await rawClient.get(`raw:${i}`);
    },
    tierRestore: async () => {
      for (let i = 0; i < big.length; i++) {
        const bytes = await tier.get(`big-${i}`);
        if (bytes === null || bytes.length !== big[i].length) restoredWrong++;
      }
    },
    tierRestoreUnverified: async () => {
      for (let i = 0; i < big.length; i++) await unverified.get(`big-${i}`);
    },
  };
  const times = Object.fromEntries(Object.keys(passes).map((name) => [name, []]));
  for (let r = 0; r < rounds; r++) for (const [name, pass] of Object.entries(passes)) times[name].push(await time(pass));
  const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
  const { rawSet, tierSave, rawGet, tierRestore, tierRestoreUnverified } = Object.fromEntries(Object.entries(times).map(([name, list]) => [name, median(list)]));
  const s = await tier.stats();
  console.log(`throughput: ${BIG_COUNT} entries of ${(BIG / (1 << 20)).toFixed(0)} MiB, one at a time, median of ${rounds} interleaved rounds`);
  // ratio = the tier's MB/s ÷ raw MB/s (1.00: the tier costs nothing over node-redis itself)
  console.log(`  save    ${mb(bytesTotal, tierSave).toFixed(0)} MB/s vs raw SET ${mb(bytesTotal, rawSet).toFixed(0)} MB/s: ratio ${(rawSet / tierSave).toFixed(2)}`);
  console.log(`  restore ${mb(bytesTotal, tierRestore).toFixed(0)} MB/s (checksum verified) vs raw GET ${mb(bytesTotal, rawGet).toFixed(0)} MB/s: ratio ${(rawGet / tierRestore).toFixed(2)}`);
  console.log(`  restore ${mb(bytesTotal, tierRestoreUnverified).toFixed(0)} MB/s (verifyEntries: false) vs raw GET: ratio ${(rawGet / tierRestoreUnverified).toFixed(2)}`);
  console.log(`  wrong or missing ${restoredWrong}, tier failures ${Object.values(s.failures).reduce((a, b) => a + b, 0)}, dropped writes ${s.rejected}`);
  await tier.close();
  await unverified.close();
  raw.destroy();
  if (errors !== 0 || wrong !== 0 || restoredWrong !== 0) process.exitCode = 1;
} finally {
  server.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
