import type { DecodeCounters } from '../compress/decode-compression.js';
import { policyRequirements } from '../compress/registry.js';
import { SnapshotMismatchError } from '../errors.js';
import type { JsonValue } from '../store/canonical.js';
import { canonicalJson } from '../store/canonical.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { ContextStore, type ContextStoreStats, type SaveOptions, type StoreListing } from '../store/context-store.js';
import { normalizeStream, streamChain, streamTokens, type ContextSegment, type ContextStream } from '../store/context-stream.js';
import type { CacheStateSettings } from '../store/keys.js';
import { entryToSnapshot, snapshotToEntry } from '../store/snapshot-entry.js';
import type { StoreTier } from '../store/tier.js';
import type { ContextReuse, ReuseHit, ReuseTarget } from './context-reuse.js';

/**
 * Options of {@link StoreStates}.
 *
 * @example
 * ```ts
 * const options: StoreStatesOptions = { tiers: [new MemoryTier({ maxBytes: 256 << 20 })], modelFingerprint: 'sha256:9f86…', tenantSalt: '' };
 * ```
 */
export interface StoreStatesOptions {
  /** Front first, as {@link ContextStore} takes them. */
  readonly tiers: readonly StoreTier[];
  /** sha256 of the checkpoint bytes, or an id the caller vouches for. */
  readonly modelFingerprint: string;
  /** Secret per tenant: another salt, other keys. */
  readonly tenantSalt: string;
  /** TTL and pinning of every save. */
  readonly save?: SaveOptions;
}

/** The stream without its last token: the states it has leave at least that token to forward. */
function withoutLastToken(stream: ContextStream): ContextSegment[] {
  const segments = normalizeStream(stream);
  for (let i = segments.length - 1; i >= 0; i--) {
    const segment = segments[i] as ContextSegment;
    if (segment.kind === 'compress') continue;
    const rest = segment.tokens.slice(0, -1);
    return [...segments.slice(0, i), ...(rest.length > 0 ? [{ kind: segment.kind, tokens: rest }] : [])];
  }
  return [];
}

/** Whether compressions under `policy` read the observation window (else an entry need not carry it). */
function readsWindow(policy: string): boolean {
  if (policy === 'none') return false; // never compresses
  try {
    return policyRequirements(policy).window;
  } catch {
    return true; // a policy this build cannot name: keep everything
  }
}

function isCounters(value: JsonValue | undefined): value is { steps: number; sinceCompress: number } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && 'steps' in value && 'sinceCompress' in value;
}

/**
 * Saved compressed states in a {@link ContextStore} of serialized entries (host memory, a directory, Redis…): a
 * save exports the sequence (one staging readback) into a snapshot entry with the decode counters in its `app`
 * section; a hit imports it into a fresh sequence. One ContextStore per namespace (the settings of a generation
 * are in it), all over the same tiers.
 *
 * @example
 * ```ts
 * const store = new StoreStates({ tiers: [await openDirectoryTier({ directory: '.kvcompact/store', maxBytes: 1 << 30 })], modelFingerprint, tenantSalt: '' });
 * const { report } = await generator.generate({ prompt, steps: 32, store });
 * console.log(report.store); // { hit, hitTokens, promptTokens, prefillTokens, restoreMs, saved }
 * ```
 */
export class StoreStates implements ContextReuse {
  private readonly stores = new Map<string, ContextStore>();
  /**
   * Single flight: the states being computed after a miss, by the key of the looked-up state, and who computes each
   * (a generation's sequence). A second request for the same missing state waits until the first has saved its
   * prompt (or ended), then looks up again and hits, instead of computing it twice.
   */
  private readonly computing = new Map<string, { readonly done: Promise<void>; readonly release: () => void; readonly tokens: number }>();
  private readonly computers = new Map<PagedKvCache, Map<number, string>>();

  constructor(readonly options: StoreStatesOptions) {}

  /** The ContextStore of one namespace (made on first use). */
  storeFor(settings: CacheStateSettings, blockSize: number): ContextStore {
    const id = `${blockSize}:${canonicalJson(settings as unknown as JsonValue, 'settings')}`;
    let store = this.stores.get(id);
    if (store === undefined) {
      const namespace = { modelFingerprint: this.options.modelFingerprint, settings, tenantSalt: this.options.tenantSalt };
      store = new ContextStore({ tiers: this.options.tiers, namespace, blockSize });
      this.stores.set(id, store);
    }
    return store;
  }

  async restore(stream: ContextStream, below: number, target: ReuseTarget): Promise<ReuseHit | null> {
    const started = performance.now();
    const store = this.storeFor(target.settings, target.cache.shape.blockSize);
    // Only states below `below` tokens: look up the stream cut there (its states are the whole stream's).
    let query: ContextStream = normalizeStream(stream);
    while (streamTokens(query) >= below && streamTokens(query) > 0) query = withoutLastToken(query);
    if (streamTokens(query) === 0) return null;
    const settings = target.settings as unknown as JsonValue;
    const wanted = (await store.chain(query)).links.at(-1)?.key;
    for (let pending = wanted && this.computing.get(wanted); pending; pending = wanted && this.computing.get(wanted)) await pending.done;
    // Claimed before the lookup, with no await between the check and the claim: of two requests at once, one
    // looks up and computes, the other waits.
    if (wanted !== undefined) this.claim(wanted, streamTokens(query), target);
    const found = await store.lookup(query, { fingerprint: this.options.modelFingerprint, settings });
    if (found.hit && found.link.tokens === streamTokens(query)) this.releaseFor(target); // nothing left to compute
    if (!found.hit) return null;
    const { snapshot, appState } = entryToSnapshot(found.entry);
    try {
      await target.cache.importSequence(target.seqId, snapshot);
    } catch (error) {
      // Another cache shape (a checkpoint of the same id but other dimensions): a miss, the cache unchanged.
      if (error instanceof SnapshotMismatchError) return null;
      throw error;
    }
    if (target.decode && isCounters(appState)) target.decode.resume(appState);
    return { tokens: found.link.tokens, segmentsUpTo: found.link.segmentsUpTo, restoreMs: performance.now() - started };
  }

  /** `target` computes the state `key` names: later requests for it wait (see {@link computing}). */
  private claim(key: string, tokens: number, target: ReuseTarget): void {
    if (this.computing.has(key)) return;
    let release = (): void => {};
    const done = new Promise<void>((resolve) => {
      release = () => {
        this.computing.delete(key);
        this.computers.get(target.cache)?.delete(target.seqId);
        resolve();
      };
    });
    this.computing.set(key, { done, release, tokens });
    let bySeq = this.computers.get(target.cache);
    if (bySeq === undefined) this.computers.set(target.cache, (bySeq = new Map()));
    bySeq.set(target.seqId, key);
  }

  /** Lets the requests waiting on what `target` computes go on (it saved past that state, or gave up). */
  private releaseFor(target: ReuseTarget, savedTokens = Number.POSITIVE_INFINITY): void {
    const key = this.computers.get(target.cache)?.get(target.seqId);
    const claim = key === undefined ? undefined : this.computing.get(key);
    if (claim && savedTokens >= claim.tokens) claim.release();
  }

  /** The generation on `target` ended (after its last save, or failing): nobody waits for it any longer. */
  finish(target: ReuseTarget): void {
    this.releaseFor(target);
  }

  async save(stream: ContextStream, target: ReuseTarget): Promise<boolean> {
    try {
      return await this.saveState(stream, target);
    } finally {
      // A waiter needs a state past the one it looked up: the prompt's end (or later) does, a block boundary may not.
      this.releaseFor(target, streamTokens(stream));
    }
  }

  private async saveState(stream: ContextStream, target: ReuseTarget): Promise<boolean> {
    const store = this.storeFor(target.settings, target.cache.shape.blockSize);
    const chain = await streamChain(store.namespace, stream, store.blockSize);
    const link = chain.links[chain.links.length - 1];
    if (link === undefined || link.tokens !== streamTokens(stream)) return false;
    // Already saved (a hit's own state, an identical request): nothing to write.
    if (await this.options.tiers[0]?.has(link.key)) return false;
    const snapshot = await target.cache.exportSequence(target.seqId);
    const counters: DecodeCounters | null = target.decode?.counters() ?? null;
    const entry = snapshotToEntry(snapshot, {
      fingerprint: this.options.modelFingerprint,
      settings: target.settings as unknown as JsonValue,
      tokenCount: link.tokens,
      ...(counters ? { appState: { steps: counters.steps, sinceCompress: counters.sinceCompress } } : {}),
      window: readsWindow(target.settings.policy),
    });
    const saved = await store.save(link, entry, this.options.save ?? {});
    return saved.stored;
  }

  async bytesStored(): Promise<number> {
    const seen = new Map<string, number>();
    for (const listing of await this.list()) if (listing.bytes !== null && !seen.has(listing.key)) seen.set(listing.key, listing.bytes);
    return [...seen.values()].reduce((a, b) => a + b, 0);
  }

  /** Every live entry of every tier, front first. */
  list(): Promise<StoreListing[]> {
    return this.any().list();
  }

  /** Closes every tier that holds something open (a Redis tier flushes its queued writes first). */
  async close(): Promise<void> {
    for (const tier of this.options.tiers) await tier.close?.();
  }

  /** Deletes every entry of every tier; resolves how many. */
  clear(): Promise<number> {
    return this.any().clear();
  }

  /** Lookup, hit and save counters of every namespace used (summed), and the tiers'. */
  async stats(): Promise<ContextStoreStats> {
    const all = await Promise.all([...this.stores.values()].map((store) => store.stats()));
    const base = await this.any().stats();
    if (all.length <= 1) return all[0] ?? base;
    const sum = (pick: (s: ContextStoreStats) => number): number => all.reduce((n, s) => n + pick(s), 0);
    const hitTokens = sum((s) => s.hitTokens);
    const queryTokens = sum((s) => s.queryTokens);
    return {
      ...base,
      lookups: sum((s) => s.lookups),
      hits: sum((s) => s.hits),
      partialHits: sum((s) => s.partialHits),
      misses: sum((s) => s.misses),
      hitTokens,
      queryTokens,
      hitRate: queryTokens > 0 ? hitTokens / queryTokens : 0,
      saves: sum((s) => s.saves),
    };
  }

  /** A store over the tiers for listing and clearing (they do not depend on the namespace). */
  private any(): ContextStore {
    const first = this.stores.values().next();
    if (!first.done) return first.value;
    const settings: CacheStateSettings = { policy: 'none', budgetMode: null, budget: null, bits: 16, sinks: null, recent: null, window: null, decodeSchedule: null };
    return new ContextStore({ tiers: this.options.tiers, namespace: { modelFingerprint: this.options.modelFingerprint, settings, tenantSalt: this.options.tenantSalt }, blockSize: 16 });
  }
}
