// The Redis tier against real redis-server processes (test/helpers/redis-server.ts): one single node, fault
// servers started and killed per test, and one 3-master cluster. No mock: what a user runs is what is tested.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StoreEntryError } from '../src/errors.js';
import { clusterSlot, groupedKey, redisKeyOf } from '../src/node/redis-support.js';
import { openRedisTier, RedisTier, type RedisTierOptions } from '../src/node/redis-tier.js';
import { streamChain } from '../src/store/context-stream.js';
import { decodeStoreEntry, encodeStoreEntry } from '../src/store/entry-format.js';
import type { StoreNamespace } from '../src/store/keys.js';
import { freePort, RedisCluster, RedisServer, requireRedis } from './helpers/redis-server.js';

const root = fileURLToPath(new URL('..', import.meta.url));

const settings = { policy: 'snapkv', budgetMode: 'uniform', budget: 64, bits: 8, sinks: 4, recent: 16, window: 8, decodeSchedule: null };
const namespaceOf = (tenantSalt: string): StoreNamespace => ({ modelFingerprint: 'sha256:test-model', settings, tenantSalt });

async function entry(seed: number, size = 2048): Promise<Uint8Array> {
  const blocks = new Uint8Array(size).map((_, i) => (i * 131 + seed * 17) & 0xff);
  return encodeStoreEntry({ layoutVersion: 1, shape: { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 }, settings: { seed }, fingerprint: 'fp', tokenCount: 16, sections: new Map([['blocks', blocks]]) });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const tiers: RedisTier[] = [];
function tier(options: RedisTierOptions): RedisTier {
  const t = new RedisTier(options);
  tiers.push(t);
  return t;
}

afterAll(async () => {
  await Promise.all(tiers.map((t) => t.close()));
});

describe('redis-server is installed', () => {
  it('fails, saying to run npm run setup, when it is not', () => {
    expect(() => requireRedis()).not.toThrow();
  });
});

describe('RedisTier on one server', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it('round-trips entries as bytes, finds a chain in one hasMany, keys and deletes', async () => {
    const t = tier({ url: server.url, keyPrefix: 'rt' });
    await until(() => t.ready, 3000, 'the connection');
    const chain = await streamChain(namespaceOf('tenant-a'), [{ kind: 'prefill', tokens: Array.from({ length: 64 }, (_, i) => i) }], 16);
    const keys = chain.links.map((link) => groupedKey(chain.namespace, link.key));
    expect(keys).toHaveLength(4);
    const first = await entry(1);
    const third = await entry(3, 70_000);
    expect(await t.put(keys[0] as string, first)).toBe(true);
    expect(await t.put(keys[2] as string, third)).toBe(true);
    await t.flush();
    expect(await t.hasMany(keys)).toEqual([true, false, true, false]);
    expect(await t.get(keys[2] as string)).toEqual(third);
    expect(await t.get(keys[1] as string)).toBeNull();
    // the layout: prefix, the namespace's hash tag, the tier key
    expect(server.cli('EXISTS', `rt:{${chain.namespace.slice(0, 16)}}:${keys[0]}`)).toBe('1');
    expect((await t.keys()).sort()).toEqual([keys[0], keys[2]].sort());
    const stats = await t.stats();
    expect(stats).toMatchObject({ entries: 2, bytes: first.length + third.length, hits: 1, misses: { absent: 1, expired: 0 } });
    expect(stats.writes).toMatchObject({ written: 2, queued: 0 });
    expect(stats.server.maxmemoryPolicy).toBe('noeviction');
    expect(await t.delete(keys[0] as string)).toBe(true);
    expect(await t.delete(keys[0] as string)).toBe(false);
    expect(await t.has(keys[0] as string)).toBe(false);
  });

  it('writes with PX = the TTL, and an expired entry misses', async () => {
    const t = tier({ url: server.url, keyPrefix: 'ttl', defaultTtlMs: 60_000 });
    await until(() => t.ready, 3000, 'the connection');
    await t.put('short', await entry(2), { ttlMs: 150 });
    await t.put('default', await entry(2));
    await t.put('pinned', await entry(2), { pinned: true, ttlMs: 150 });
    await t.flush();
    const pttl = Number(server.cli('PTTL', redisKeyOf('ttl', 'short')));
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(150);
    expect(Number(server.cli('PTTL', redisKeyOf('ttl', 'default')))).toBeGreaterThan(59_000);
    expect(server.cli('PTTL', redisKeyOf('ttl', 'pinned'))).toBe('-1');
    await sleep(250);
    expect(await t.get('short')).toBeNull();
    expect(await t.get('pinned')).not.toBeNull();
  });

  it('refuses corrupt bytes a raw client wrote: a counted miss, the bad key deleted; unverified, decodeStoreEntry refuses them', async () => {
    const t = tier({ url: server.url, keyPrefix: 'bad' });
    const raw = tier({ url: server.url, keyPrefix: 'bad', verifyEntries: false });
    await until(() => t.ready && raw.ready, 3000, 'the connections');
    const good = await entry(4);
    await t.put('k', good);
    await t.flush();
    const corrupt = Buffer.from(good);
    corrupt[200] = (corrupt[200] as number) ^ 0x40;
    const writer = createClient({ url: server.url });
    writer.on('error', () => {});
    await writer.connect();
    await writer.set(redisKeyOf('bad', 'k'), corrupt);
    const unverified = await raw.get('k');
    expect(unverified).toEqual(new Uint8Array(corrupt));
    await expect(decodeStoreEntry(unverified as Uint8Array)).rejects.toBeInstanceOf(StoreEntryError);
    expect(await t.get('k')).toBeNull();
    const stats = await t.stats();
    expect(stats.corrupt).toEqual({ checksum: 1 });
    expect(stats.failures.corrupt).toBe(1);
    await until(async () => (await writer.exists(redisKeyOf('bad', 'k'))) === 0, 2000, 'the corrupt key to be deleted');
    await writer.set(redisKeyOf('bad', 'k'), 'not an entry at all');
    expect(await t.get('k')).toBeNull();
    expect((await t.stats()).corrupt).toEqual({ checksum: 1, length: 1 });
    writer.destroy();
  });

  it('a paused server (CLIENT PAUSE) is a timeout miss, then answers again', async () => {
    const t = tier({ url: server.url, keyPrefix: 'slow', operationTimeoutMs: 100 });
    await until(() => t.ready, 3000, 'the connection');
    await t.put('k', await entry(5));
    await t.flush();
    server.cli('CLIENT', 'PAUSE', '2000', 'ALL');
    const started = Date.now();
    expect(await t.get('k')).toBeNull();
    expect(Date.now() - started).toBeLessThan(1500); // the timeout answered, not the end of the pause
    expect((await t.stats()).failures.timeout).toBeGreaterThanOrEqual(1);
    await sleep(2100 - (Date.now() - started));
    expect(await t.get('k')).toEqual(await entry(5));
  });

  it('opens the circuit breaker after consecutive failures, skips Redis, and closes after a good probe', async () => {
    let now = 0;
    const t = tier({ url: server.url, keyPrefix: 'cb', operationTimeoutMs: 300, breakerThreshold: 3, breakerOpenMs: 1000, now: () => now });
    await until(() => t.ready, 3000, 'the connection');
    await t.put('k', await entry(6));
    await t.flush();
    // redis-cli cannot UNPAUSE a paused server (its own connection waits too): pause briefly and wait it out.
    const pausedUntil = Date.now() + 2500;
    server.cli('CLIENT', 'PAUSE', '2500', 'ALL');
    for (let i = 0; i < 3; i++) expect(await t.get('k')).toBeNull();
    expect((await t.stats()).breaker).toEqual({ state: 'open', opens: 1 });
    const other = await entry(6);
    const skipped = Date.now();
    expect(await t.get('k')).toBeNull();
    expect(await t.put('k2', other)).toBe(false);
    expect(Date.now() - skipped).toBeLessThan(250); // less than one timeout (300 ms) for two calls: Redis was skipped
    let stats = await t.stats();
    expect(stats.failures).toMatchObject({ timeout: 3, breaker: 1 });
    expect(stats.writes.dropped.breaker).toBe(1);
    await sleep(pausedUntil + 100 - Date.now());
    now += 999;
    expect(await t.get('k')).toBeNull(); // still open on the clock
    now += 1;
    expect(await t.get('k')).toEqual(await entry(6)); // the probe
    stats = await t.stats();
    expect(stats.breaker).toEqual({ state: 'closed', opens: 1 });
  });

  it('bounds the write queue: puts never wait, extra writes are dropped and counted', async () => {
    const t = tier({ url: server.url, keyPrefix: 'q', writeConcurrency: 1, maxQueuedWrites: 2, operationTimeoutMs: 2000 });
    await until(() => t.ready, 3000, 'the connection');
    const bytes = await entry(7);
    server.cli('CLIENT', 'PAUSE', '1500', 'WRITE');
    const started = Date.now();
    const accepted = await Promise.all(Array.from({ length: 10 }, (_, i) => t.put(`k${i}`, bytes)));
    expect(Date.now() - started).toBeLessThan(1000); // the puts returned while the server still held the writes
    expect(accepted).toEqual([true, true, true, false, false, false, false, false, false, false]);
    expect((await t.stats()).writes.dropped['queue-full']).toBe(7);
    await t.flush();
    expect((await t.stats()).writes).toMatchObject({ written: 3, queued: 0, queuedBytes: 0 });
    expect(await t.hasMany(['k0', 'k1', 'k2', 'k3'])).toEqual([true, true, true, false]);
  });

  it('keeps tenants apart: another tenant salt gives other keys, which find nothing', async () => {
    const t = tier({ url: server.url, keyPrefix: 'tenants' });
    await until(() => t.ready, 3000, 'the connection');
    const stream = [{ kind: 'prefill' as const, tokens: Array.from({ length: 48 }, (_, i) => (i * 7) % 500) }];
    const a = await streamChain(namespaceOf('tenant-a'), stream, 16);
    const b = await streamChain(namespaceOf('tenant-b'), stream, 16);
    const aKeys = a.links.map((l) => groupedKey(a.namespace, l.key));
    const bKeys = b.links.map((l) => groupedKey(b.namespace, l.key));
    expect(aKeys.some((key) => bKeys.includes(key))).toBe(false);
    for (const key of aKeys) await t.put(key, await entry(8));
    await t.flush();
    expect(await t.hasMany(aKeys)).toEqual([true, true, true]);
    expect(await t.hasMany(bKeys)).toEqual([false, false, false]);
    expect(await t.get(bKeys[2] as string)).toBeNull();
  });

  it('reads an entry another process saved, byte for byte (the built Node entry in two fresh processes)', async () => {
    const build = spawnSync('node', ['esbuild.config.mjs'], { cwd: root, encoding: 'utf8' });
    expect(build.status, build.stderr).toBe(0);
    expect(existsSync(`${root}dist/node.js`)).toBe(true);
    const script = fileURLToPath(new URL('./helpers/redis-process.mjs', import.meta.url));
    const runProcess = (mode: string) => {
      const result = spawnSync('node', [script, mode, server.url, 'cross/process-key'], { cwd: root, encoding: 'utf8', timeout: 20_000 });
      expect(result.status, result.stderr).toBe(0);
      return JSON.parse(result.stdout.trim().split('\n').pop() as string) as { sha: string; length: number };
    };
    const saved = runProcess('save');
    expect(saved).toMatchObject({ queued: true, written: 1 });
    const loaded = runProcess('load');
    expect(loaded).toMatchObject({ hit: true, sha: saved.sha, length: saved.length, tokenCount: 32 });
  });
});

describe('RedisTier when the server fails', () => {
  it('starts without a server (misses, dropped writes, no throw) and connects once one starts', async () => {
    const port = await freePort();
    const t = tier({ url: `redis://127.0.0.1:${port}`, maxReconnectDelayMs: 100 });
    expect(await t.get('k')).toBeNull();
    expect(await t.hasMany(['a', 'b'])).toEqual([false, false]);
    expect(await t.put('k', await entry(9))).toBe(false);
    expect(await t.delete('k')).toBe(false);
    expect(await t.keys()).toEqual([]);
    let stats = await t.stats();
    expect(stats.failures.unavailable).toBe(4);
    expect(stats.writes.dropped.unavailable).toBe(1);
    expect(stats.server.reachable).toBe(0);
    const server = await RedisServer.start({ port });
    try {
      await until(() => t.ready, 5000, 'the reconnection');
      expect(await t.put('k', await entry(9))).toBe(true);
      await t.flush();
      expect(await t.get('k')).toEqual(await entry(9));
      stats = await t.stats();
      expect(stats.connectionErrors).toBeGreaterThan(0);
    } finally {
      await server.destroy();
    }
  });

  it('killed mid-run: misses without errors; restarted: reconnects and serves again', async () => {
    const server = await RedisServer.start();
    try {
      const t = tier({ url: server.url, maxReconnectDelayMs: 100, operationTimeoutMs: 200 });
      await until(() => t.ready, 3000, 'the connection');
      await t.put('k', await entry(10));
      await t.flush();
      expect(await t.get('k')).not.toBeNull();
      await server.kill();
      const during = await Promise.all([t.get('k'), t.get('k'), t.has('k'), t.put('k2', await entry(10)), t.delete('k')]);
      expect(during).toEqual([null, null, false, false, false]);
      const stats = await t.stats();
      expect(stats.failures.unavailable + stats.failures.error + stats.failures.timeout + stats.failures.breaker).toBe(4);
      await server.start();
      await until(() => t.ready, 5000, 'the reconnection');
      expect(await t.get('k')).toBeNull(); // no persistence: the restarted server is empty
      await t.put('k', await entry(11));
      await t.flush();
      expect(await t.get('k')).toEqual(await entry(11));
    } finally {
      await server.destroy();
    }
  });

  it('an ACL user limited to its key prefix and the documented commands (docs/redis.md) works', async () => {
    const server = await RedisServer.start();
    try {
      const acl = '~kvc:* +get +set +exists +del +scan +strlen +info +ping +hello +auth +cluster|slots +cluster|shards';
      server.cli('ACL', 'SETUSER', 'kvc', 'on', '>acl-Pa55-w0rd', ...acl.split(' '));
      const t = tier({ url: `redis://kvc:acl-Pa55-w0rd@127.0.0.1:${server.port}` });
      await until(() => t.ready, 3000, 'the ACL connection');
      await t.put('k', await entry(14));
      await t.flush();
      expect(await t.get('k')).toEqual(await entry(14));
      expect(await t.hasMany(['k', 'x'])).toEqual([true, false]);
      const stats = await t.stats();
      expect(stats.entries).toBe(1);
      expect(stats.server.maxmemoryPolicy).toBe('noeviction');
      expect(stats.failures).toEqual({ unavailable: 0, timeout: 0, breaker: 0, error: 0, corrupt: 0 });
      expect(JSON.stringify(stats)).not.toContain('acl-Pa55-w0rd');
      expect(stats.target).toBe(`redis://***:***@127.0.0.1:${server.port}`);
    } finally {
      await server.destroy();
    }
  });

  it('rediss:// speaks TLS, with the CA passed through; an untrusted certificate is a miss, not a throw', async () => {
    expect(spawnSync('sh', ['-c', 'command -v openssl']).status, 'the TLS test makes its certificate with openssl: install it').toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'kvc-tls-'));
    const made = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const port = await freePort();
    const cert = join(dir, 'cert.pem');
    const server = await RedisServer.start({ port, args: ['--port', '0', '--tls-port', String(port), '--tls-cert-file', cert, '--tls-key-file', join(dir, 'key.pem'), '--tls-ca-cert-file', cert, '--tls-auth-clients', 'no'] });
    try {
      const t = tier({ url: `rediss://127.0.0.1:${port}`, tls: { ca: readFileSync(cert) } });
      await until(() => t.ready, 3000, 'the TLS connection');
      await t.put('k', await entry(15));
      await t.flush();
      expect(await t.get('k')).toEqual(await entry(15));
      const untrusted = tier({ url: `rediss://127.0.0.1:${port}`, maxReconnectDelayMs: 100 });
      await sleep(200);
      expect(await untrusted.get('k')).toBeNull();
      expect((await untrusted.stats()).failures.unavailable).toBe(1);
      expect((await untrusted.stats()).lastError ?? '').toMatch(/certificate/i);
    } finally {
      await server.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shows server-side eviction (maxmemory-policy allkeys-lru) in stats', async () => {
    const server = await RedisServer.start({ args: ['--maxmemory', '3mb', '--maxmemory-policy', 'allkeys-lru'] });
    try {
      const t = tier({ url: server.url, maxQueuedWrites: 200 });
      await until(() => t.ready, 3000, 'the connection');
      const bytes = await entry(13, 64 << 10);
      for (let i = 0; i < 100; i++) await t.put(`k${i}`, bytes);
      await t.flush();
      const stats = await t.stats();
      expect(stats.writes.written).toBe(100);
      expect(stats.server.maxmemoryPolicy).toBe('allkeys-lru');
      expect(stats.server.maxmemoryBytes).toBe(3 << 20);
      expect(stats.server.evictedKeys).toBeGreaterThan(0);
      expect(stats.evictions.capacity).toBe(stats.server.evictedKeys);
      // Redis evicts before each command it runs, so the SCAN of stats may evict a few more after its INFO
      expect(stats.entries).toBeGreaterThan(0);
      expect(stats.entries).toBeLessThanOrEqual(100 - (stats.server.evictedKeys as number));
      expect(await t.get('k99')).toEqual(bytes); // the newest survive
    } finally {
      await server.destroy();
    }
  });

  it('AUTH through the URL; the password never shows in stats or errors', async () => {
    const password = 'pw-S3cret-9f2k';
    const server = await RedisServer.start({ password });
    try {
      const good = tier({ url: server.url });
      await until(() => good.ready, 3000, 'the authenticated connection');
      await good.put('k', await entry(12));
      await good.flush();
      expect(await good.get('k')).toEqual(await entry(12));
      const wrongPassword = 'wrong-Pa55-7q';
      const bad = tier({ url: `redis://default:${wrongPassword}@127.0.0.1:${server.port}`, maxReconnectDelayMs: 100 });
      await sleep(300);
      expect(await bad.get('k')).toBeNull();
      const badStats = JSON.stringify(await bad.stats());
      const goodStats = JSON.stringify(await good.stats());
      expect(badStats).toContain('***');
      expect(badStats).not.toContain(wrongPassword);
      expect(goodStats).not.toContain(password);
      expect((await bad.stats()).lastError ?? '').toMatch(/WRONGPASS|auth|closed|Error/i);
      expect(() => new RedisTier({ url: `http://u:${password}@h:1` })).toThrow(/redis:\/\//);
      try {
        new RedisTier({ url: `http://u:${password}@h:1` });
      } catch (error) {
        expect(String(error)).not.toContain(password);
      }
      const opened = await openRedisTier(server.url, { waitMs: 3000 });
      tiers.push(opened);
      expect(await opened.get('k')).toEqual(await entry(12));
    } finally {
      await server.destroy();
    }
  });
});

describe('RedisTier on a 3-master cluster', () => {
  let cluster: RedisCluster;
  beforeAll(async () => {
    cluster = await RedisCluster.start(3);
  }, 30_000);
  afterAll(async () => {
    await cluster?.destroy();
  });

  it('spreads namespaces over the masters, keeps a chain in one slot, looks up right; a dead master misses only its slots', async () => {
    const t = tier({ url: cluster.urls, keyPrefix: 'cl', operationTimeoutMs: 300, maxReconnectDelayMs: 200 });
    await until(() => t.ready, 5000, 'the cluster connection');
    const tokens = Array.from({ length: 32 }, (_, i) => i);
    const chains = await Promise.all(Array.from({ length: 24 }, (_, i) => streamChain(namespaceOf(`tenant-${i}`), [{ kind: 'prefill', tokens }], 16)));
    const keysOf = (chain: (typeof chains)[number]) => chain.links.map((l) => groupedKey(chain.namespace, l.key));
    for (const [i, chain] of chains.entries()) for (const key of keysOf(chain)) await t.put(key, await entry(i));
    await t.flush();
    expect((await t.stats()).writes.written).toBe(48);
    // one slot per chain, and the three masters all hold some
    for (const chain of chains) expect(new Set(keysOf(chain).map((key) => clusterSlot(redisKeyOf('cl', key)))).size).toBe(1);
    const perNode = cluster.nodes.map((n) => Number(n.cli('DBSIZE')));
    expect(perNode.every((n) => n > 0)).toBe(true);
    expect(perNode.reduce((a, b) => a + b, 0)).toBe(48);
    expect(Number(cluster.nodes[0]?.cli('CLUSTER', 'KEYSLOT', redisKeyOf('cl', keysOf(chains[0]!)[0]!)))).toBe(clusterSlot(redisKeyOf('cl', keysOf(chains[0]!)[0]!)));
    for (const [i, chain] of chains.entries()) {
      expect(await t.hasMany(keysOf(chain))).toEqual([true, true]);
      expect(await t.get(keysOf(chain)[1] as string)).toEqual(await entry(i));
    }
    expect((await t.stats()).entries).toBe(48);
    // one chain's lookup is answered by one node: only its owner counts the EXISTS calls
    for (const node of cluster.nodes) node.cli('CONFIG', 'RESETSTAT');
    expect(await t.hasMany(keysOf(chains[5]!))).toEqual([true, true]);
    const existsCalls = cluster.nodes.map((n) => Number(/cmdstat_exists:calls=(\d+)/.exec(n.cli('INFO', 'commandstats'))?.[1] ?? 0));
    expect(existsCalls.sort()).toEqual([0, 0, 2]);

    const victim = cluster.nodes[1] as RedisServer;
    const onVictim = chains.map((chain) => cluster.owner(clusterSlot(redisKeyOf('cl', keysOf(chain)[0]!))) === victim);
    expect(onVictim.some(Boolean)).toBe(true);
    expect(onVictim.every(Boolean)).toBe(false);
    await victim.kill();
    for (let round = 0; round < 2; round++) {
      for (const [i, chain] of chains.entries()) {
        const got = await t.get(keysOf(chain)[1] as string);
        if (onVictim[i]) expect(got).toBeNull();
        else expect(got).toEqual(await entry(i));
      }
    }
    const stats = await t.stats();
    expect(stats.hits).toBe(24 + 2 * onVictim.filter((v) => !v).length);
    expect(stats.misses.absent).toBe(0);
    expect(stats.server.reachable).toBe(2);
  }, 30_000);
});
