// The --store and --tenant flags of generate, cag and store: which tiers, under which tenant's salt, for which model.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { ContextReuse } from '../app/context-reuse.js';
import type { Generator } from '../app/generator.js';
import { StoreStates } from '../app/store-reuse.js';
import { InvalidArgumentError, UsageError } from '../errors.js';
import { MemoryTier } from '../store/memory-tier.js';
import type { StoreTier } from '../store/tier.js';
import { openDirectoryTier } from '../node/directory-tier.js';
import { openRedisTier } from '../node/redis-tier.js';
import type { FlagTable } from './flags.js';

/**
 * The store flags, for the commands that take them.
 *
 * @example
 * ```ts
 * const flags = { ...GENERATION_FLAGS, ...STORE_FLAGS } as const satisfies FlagTable;
 * ```
 */
export const STORE_FLAGS = {
  store: { type: 'string', value: 'SPEC', help: 'saved compressed states: gpu (this process\'s GPU; first), memory, dir:PATH, redis://HOST:PORT[/DB] (rediss:// for TLS; several redis:// URLs in a row: a cluster), or a comma list front first (gpu,memory,redis://…)' },
  tenant: { type: 'string', value: 'NAME', help: "tenant whose states these are: another tenant's never match (default none)" },
} as const satisfies FlagTable;

/** Host memory a `memory` tier may hold. */
const MEMORY_BYTES = 512 << 20;
/** Disk a `dir:` tier may hold. */
const DIRECTORY_BYTES = 8 * 2 ** 30;
/** Time a state lives in Redis (the server may evict it sooner by its maxmemory-policy). */
const REDIS_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * The tiers of a --store value, front first: `memory` (host memory, this process only), `dir:PATH` (a directory,
 * across processes), `redis://…` / `rediss://…` (a Redis server, shared across machines; URLs in a row are the
 * root nodes of one cluster). A memory tier in front of another demotes to it what it evicts. Close them when done
 * (`StoreStates.close`): a Redis tier flushes its queued writes and lets the process exit.
 *
 * @throws UsageError for an unknown or repeated tier.
 */
export async function openStoreTiers(spec: string): Promise<StoreTier[]> {
  const parts = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new UsageError('--store', 'expects memory, dir:PATH, redis://HOST:PORT or a comma list of them');
  const isRedis = (item: string): boolean => item.startsWith('redis://') || item.startsWith('rediss://');
  // Adjacent Redis URLs are one tier: a cluster's root nodes.
  const items: string[] = [];
  for (const part of parts) {
    const last = items[items.length - 1];
    if (last !== undefined && isRedis(last) && isRedis(part)) items[items.length - 1] = `${last},${part}`;
    else items.push(part);
  }
  const tiers: StoreTier[] = [];
  // Built back to front, so that each tier can demote into the one after it.
  for (const item of [...items].reverse()) {
    const next = tiers[0];
    let tier: StoreTier;
    if (item === 'memory') {
      tier = new MemoryTier({ name: 'memory', maxBytes: MEMORY_BYTES, eviction: 'priority-decay', ...(next ? { next } : {}) });
    } else if (item.startsWith('dir:') && item.length > 4) {
      tier = await openDirectoryTier({ directory: resolve(item.slice(4)), maxBytes: DIRECTORY_BYTES, eviction: 'priority-decay', ...(next ? { next } : {}) });
    } else if (item === 'gpu') {
      throw new UsageError('--store', 'gpu holds states in the GPU of one generating process: there is nothing to open here; name memory, dir:PATH or redis://…');
    } else if (isRedis(item)) {
      try {
        tier = await openRedisTier(item, { defaultTtlMs: REDIS_TTL_MS });
      } catch (error) {
        if (error instanceof InvalidArgumentError) throw new UsageError('--store', error.message);
        throw error;
      }
      // Only a demoting tier in front needs `next`; Redis is the last tier it can demote to.
    } else {
      throw new UsageError('--store', `unknown tier "${item}"; use memory, dir:PATH, or a comma list of them (memory,dir:PATH)`);
    }
    if (tiers.some((t) => t.name === tier.name)) throw new UsageError('--store', `names the ${tier.name} tier twice`);
    tiers.unshift(tier);
  }
  return tiers;
}

/**
 * The model's fingerprint for store keys: sha256 of the checkpoint's bytes, so that another file of the same name
 * never shares states. A HF model folder hashes config.json, tokenizer.json and its safetensors files, each name
 * and length before its bytes, streamed (weights are gigabytes).
 */
export async function modelFingerprint(modelPath: string): Promise<string> {
  if (!(await stat(modelPath)).isDirectory()) return `sha256:${createHash('sha256').update(await readFile(modelPath)).digest('hex')}`;
  const hash = createHash('sha256');
  const names = (await readdir(modelPath)).filter((n) => n === 'config.json' || n === 'tokenizer.json' || n.endsWith('.safetensors')).sort();
  for (const name of names) {
    const path = join(modelPath, name);
    hash.update(`${name}\0${(await stat(path)).size}\0`);
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  }
  return `sha256:${hash.digest('hex')}`;
}

/** A tenant's salt: its name hashed with a fixed label (no tenant: the empty salt). */
export function tenantSalt(tenant: string | undefined): string {
  if (tenant === undefined || tenant === '') return '';
  return `tenant:${createHash('sha256').update(`kvcompact-tenant\0${tenant}`).digest('hex')}`;
}

/** GPU-resident states a `gpu` tier keeps (sequence slots of the generator's caches). */
export const GPU_TIER_STATES = 4;

/**
 * Whether a --store value starts with the `gpu` tier (forked sequences in the generator's caches: the generator
 * must be made with {@link GPU_TIER_STATES} resident states), and the tiers after it.
 *
 * @throws UsageError for `gpu` anywhere but first.
 */
export function splitGpuTier(spec: string | undefined): { gpu: boolean; rest: string | null } {
  if (spec === undefined) return { gpu: false, rest: null };
  const items = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const at = items.indexOf('gpu');
  if (at > 0) throw new UsageError('--store', 'gpu is the front tier: write it first (gpu,memory,dir:PATH)');
  return at === 0 ? { gpu: true, rest: items.length > 1 ? items.slice(1).join(',') : null } : { gpu: false, rest: spec };
}

/**
 * The store of the --store and --tenant flags for a model file; null without --store (--tenant then means nothing).
 * A leading `gpu` tier keeps states in `generator` and demotes them to the tiers after it.
 *
 * @throws UsageError for --tenant without --store, or a bad --store.
 */
export async function storeFromFlags(values: { store?: string; tenant?: string }, modelPath: string, generator: Generator): Promise<{ store: ContextReuse; entries: StoreStates | null } | null> {
  if (values.store === undefined) {
    if (values.tenant !== undefined) throw new UsageError('--tenant', 'names whose saved states to use: add --store');
    return null;
  }
  const { gpu, rest } = splitGpuTier(values.store);
  const namespace = { modelFingerprint: await modelFingerprint(modelPath), tenantSalt: tenantSalt(values.tenant) };
  const entries = rest === null ? null : new StoreStates({ tiers: await openStoreTiers(rest), ...namespace });
  if (!gpu) return entries ? { store: entries, entries } : null;
  return { store: generator.residentStates({ ...namespace, ...(entries ? { next: entries } : {}) }), entries };
}
