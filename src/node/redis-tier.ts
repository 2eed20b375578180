/**
 * The Redis tier: entries shared across processes and machines through a Redis server or a Redis Cluster
 * (node-redis). One value per entry (the store's checksummed container), written with SET PX = its TTL, under
 * `<prefix>:{<group tag>}:<tier key>` (redis-support.ts): the keys of one group, a stream chain's namespace,
 * share one cluster slot, so a longest-prefix lookup is one pipelined round trip to one node ({@link RedisTier.hasMany}).
 *
 * Redis is a cache here, never a dependency: whatever the server does (absent, killed, restarted, paused,
 * answering garbage), every method resolves (a miss, false, an empty list) with the reason counted in
 * {@link RedisTier.stats}, never throws into the caller and never lets node-redis emit an unhandled 'error'.
 * Writes never block the caller: `put` queues (bounded by entries and bytes) and resolves at once; a full queue
 * drops the write and counts it. A per-server circuit breaker skips a failing server for a while.
 */
import { createClient, createCluster, RESP_TYPES } from 'redis';
import { decodeStoreEntry } from '../store/entry-format.js';
import type { EvictionReason, MissReason, PutOptions, StoreTier, TierStats } from '../store/tier.js';
import { InvalidArgumentError, StoreEntryError, type StoreEntryReason } from '../errors.js';
import { asBytes, checkUrl, CircuitBreaker, clusterSlot, infoField, positive, redact, redactUrl, redisKeyOf, settle, tierKeyOf, urlSecrets, type BreakerState, type Outcome } from './redis-support.js';

/** Why an operation degraded to a miss (a get or has), false (a put or delete) or nothing (keys). */
export type RedisFailure = 'unavailable' | 'timeout' | 'breaker' | 'error' | 'corrupt';
/** Why a queued write never reached Redis. */
export type DroppedWrite = 'queue-full' | 'unavailable' | 'breaker' | 'timeout' | 'error';

/** TLS settings for `rediss://` beyond the URL (passed through to Node's tls.connect). */
export interface RedisTlsOptions {
  readonly ca?: string | Uint8Array;
  readonly cert?: string | Uint8Array;
  readonly key?: string | Uint8Array;
  readonly servername?: string;
  /** Default true; false only for a test server with a self-signed certificate. */
  readonly rejectUnauthorized?: boolean;
}

/** Options of {@link RedisTier}. */
export interface RedisTierOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS). For a cluster: its root nodes' URLs. */
  readonly url: string | readonly string[];
  /** Treat the URL(s) as cluster root nodes. Default: true when more than one URL is given. */
  readonly cluster?: boolean;
  /** Default 'redis'. */
  readonly name?: string;
  /** First part of every Redis key; distinct prefixes share a server without seeing each other. Default 'kvc'. */
  readonly keyPrefix?: string;
  /** TTL of a put that gives none; null (the default): until the server evicts it. */
  readonly defaultTtlMs?: number | null;
  /** Per-operation limit; a slower answer is a miss ('timeout'). Default 250. */
  readonly operationTimeoutMs?: number;
  /** Default 2000. */
  readonly connectTimeoutMs?: number;
  /** Longest wait between reconnection attempts (they back off from 50 ms). Default 2000. */
  readonly maxReconnectDelayMs?: number;
  /** Writes waiting at most; more are dropped. Default 64. */
  readonly maxQueuedWrites?: number;
  /** Bytes of writes waiting at most; more are dropped. Default 256 MiB. */
  readonly maxQueuedBytes?: number;
  /** Writes in flight at once. Default 4. */
  readonly writeConcurrency?: number;
  /** Consecutive failures that open a server's circuit breaker. Default 5. */
  readonly breakerThreshold?: number;
  /** How long an open breaker skips its server. Default 5000. */
  readonly breakerOpenMs?: number;
  /** Check each entry `get` reads (decodeStoreEntry): a corrupt one is a miss, counted and deleted. Default true. */
  readonly verifyEntries?: boolean;
  readonly tls?: RedisTlsOptions;
  /** Clock in milliseconds for the breaker. Default Date.now; tests pass a fake one. */
  readonly now?: () => number;
}

/** What the servers report (summed over a cluster's masters); null fields where a server did not answer. */
export interface RedisServerStats {
  /** Masters that answered INFO, of those known. */
  readonly reachable: number;
  readonly nodes: number;
  /** Keys the servers evicted for room (maxmemory-policy), server-wide since their start. */
  readonly evictedKeys: number | null;
  /** Keys whose TTL ran out, server-wide since their start. */
  readonly expiredKeys: number | null;
  readonly maxmemoryPolicy: string | null;
  readonly maxmemoryBytes: number | null;
  readonly usedMemoryBytes: number | null;
}

/**
 * {@link TierStats} plus what a remote tier adds. `hits + misses.absent + failures.*` counts every get; `entries`
 * and `bytes` are counted on the servers (a SCAN of the prefix: stats is a diagnostics call, not a hot path);
 * `evictions.capacity` and `evictions.ttl` are the servers' evicted_keys and expired_keys.
 */
export interface RedisTierStats extends TierStats {
  /** The server(s), credentials redacted. */
  readonly target: string;
  readonly failures: Readonly<Record<RedisFailure, number>>;
  /** Corrupt entries read, by the reason decodeStoreEntry refused them. */
  readonly corrupt: Readonly<Partial<Record<StoreEntryReason, number>>>;
  readonly writes: {
    readonly queued: number;
    readonly queuedBytes: number;
    readonly written: number;
    readonly dropped: Readonly<Record<DroppedWrite, number>>;
  };
  readonly breaker: { readonly state: BreakerState; readonly opens: number };
  /** 'error' events node-redis emitted (connection refused, reset, …): handled, counted. */
  readonly connectionErrors: number;
  /** The last failure's message, credentials redacted; null when none. */
  readonly lastError: string | null;
  readonly server: RedisServerStats;
}

type Arg = string | Buffer;

/** What the tier needs of a client or a cluster, so the two are one code path. */
interface Backend {
  ready(redisKey: string): boolean;
  /** Breaker id of the server that owns the key. */
  target(redisKey: string): string;
  send(redisKey: string, readonly: boolean, args: Arg[]): Promise<unknown>;
  /** One sender per master, for SCAN and INFO. */
  masters(): Promise<Array<(args: Arg[]) => Promise<unknown>>>;
  knownMasters(): number;
  connect(): void;
  close(): void;
}

const BUFFERS = { [RESP_TYPES.BLOB_STRING]: Buffer } as const;

/**
 * A store tier on Redis or Redis Cluster. Connects in the background: constructing one never waits or throws for
 * the server (use {@link openRedisTier} to wait briefly for the first connection).
 *
 * @example
 * ```ts
 * const redis = new RedisTier({ url: 'redis://cache.internal:6379/0', defaultTtlMs: 3_600_000 });
 * await redis.put(groupedKey(chain.namespace, link.key), entryBytes); // queued, resolves at once
 * const present = await redis.hasMany(chain.links.map((l) => groupedKey(chain.namespace, l.key)));
 * ```
 */
export class RedisTier implements StoreTier {
  readonly name: string;
  readonly keyPrefix: string;
  readonly defaultTtlMs: number | null;
  readonly operationTimeoutMs: number;
  readonly maxQueuedWrites: number;
  readonly maxQueuedBytes: number;
  readonly #target: string;
  readonly #secrets: string[];
  readonly #backend: Backend;
  readonly #verify: boolean;
  readonly #concurrency: number;
  readonly #breakers = new Map<string, CircuitBreaker>();
  readonly #breakerThreshold: number;
  readonly #breakerOpenMs: number;
  readonly #now: () => number;
  readonly #queue: Array<{ readonly redisKey: string; readonly bytes: Uint8Array; readonly ttlMs: number | null }> = [];
  #queuedBytes = 0;
  #inFlight = 0;
  #drained: Array<() => void> = [];
  #closed = false;
  #hits = 0;
  readonly #misses: Record<MissReason, number> = { absent: 0, expired: 0 };
  #explicit = 0;
  readonly #failures: Record<RedisFailure, number> = { unavailable: 0, timeout: 0, breaker: 0, error: 0, corrupt: 0 };
  readonly #corrupt: Partial<Record<StoreEntryReason, number>> = {};
  #written = 0;
  readonly #dropped: Record<DroppedWrite, number> = { 'queue-full': 0, unavailable: 0, breaker: 0, timeout: 0, error: 0 };
  #connectionErrors = 0;
  #lastError: string | null = null;

  constructor(options: RedisTierOptions) {
    const urls = (typeof options.url === 'string' ? [options.url] : [...options.url]).map(checkUrl);
    if (urls.length === 0) throw new InvalidArgumentError('url', 'give at least one redis:// URL');
    this.name = options.name ?? 'redis';
    this.keyPrefix = options.keyPrefix ?? 'kvc';
    if (this.keyPrefix === '' || /[{}:]/.test(this.keyPrefix)) throw new InvalidArgumentError('keyPrefix', `must be non-empty without "{", "}" or ":"; got ${this.keyPrefix}`);
    this.defaultTtlMs = options.defaultTtlMs === undefined || options.defaultTtlMs === null ? null : positive('defaultTtlMs', options.defaultTtlMs);
    this.operationTimeoutMs = positive('operationTimeoutMs', options.operationTimeoutMs ?? 250);
    this.maxQueuedWrites = positive('maxQueuedWrites', options.maxQueuedWrites ?? 64);
    this.maxQueuedBytes = positive('maxQueuedBytes', options.maxQueuedBytes ?? 256 << 20);
    this.#concurrency = positive('writeConcurrency', options.writeConcurrency ?? 4);
    this.#breakerThreshold = positive('breakerThreshold', options.breakerThreshold ?? 5);
    this.#breakerOpenMs = positive('breakerOpenMs', options.breakerOpenMs ?? 5000);
    this.#verify = options.verifyEntries ?? true;
    this.#now = options.now ?? Date.now;
    this.#target = urls.map(redactUrl).join(',');
    this.#secrets = urls.flatMap(urlSecrets);
    const cluster = options.cluster ?? urls.length > 1;
    this.#backend = cluster ? this.#clusterBackend(urls, options) : this.#singleBackend(urls[0] as string, options);
    this.#backend.connect();
  }

  #note(error: unknown): void {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    this.#lastError = redact(message, this.#secrets).slice(0, 500);
  }

  #socket(url: string, options: RedisTierOptions): Record<string, unknown> {
    const maxDelay = options.maxReconnectDelayMs ?? 2000;
    const tls = /^rediss:/i.test(url);
    return {
      connectTimeout: options.connectTimeoutMs ?? 2000,
      // Never give up: a restarted server is picked up again; the breaker and the timeouts keep callers fast meanwhile.
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 10), maxDelay),
      ...(tls ? { tls: true, ...(options.tls ?? {}) } : {}),
    };
  }

  #singleBackend(url: string, options: RedisTierOptions): Backend {
    // disableOfflineQueue: a command sent while disconnected fails at once (a miss) instead of waiting for a reconnect.
    const client = createClient({ url, socket: this.#socket(url, options), disableOfflineQueue: true });
    client.on('error', (error: unknown) => {
      this.#connectionErrors++;
      this.#note(error);
    });
    const send = (args: Arg[]): Promise<unknown> => client.sendCommand(args, { typeMapping: BUFFERS });
    return {
      ready: () => client.isReady,
      target: () => 'server',
      send: (_key, _readonly, args) => send(args),
      masters: () => Promise.resolve(client.isReady ? [send] : []),
      knownMasters: () => 1,
      connect: () => {
        client.connect().catch((error: unknown) => this.#note(error));
      },
      close: () => {
        if (client.isOpen) client.destroy();
      },
    };
  }

  #clusterBackend(urls: string[], options: RedisTierOptions): Backend {
    const first = new URL(urls[0] as string);
    const credentials = {
      ...(first.username !== '' ? { username: decodeURIComponent(first.username) } : {}),
      ...(first.password !== '' ? { password: decodeURIComponent(first.password) } : {}),
    };
    const cluster = createCluster({
      rootNodes: urls.map((url) => ({ url })),
      // Nodes found through CLUSTER SLOTS get these (the URL's credentials and TLS), and fail fast when offline.
      defaults: { ...credentials, socket: this.#socket(urls[0] as string, options), disableOfflineQueue: true },
    });
    cluster.on('error', (error: unknown) => {
      this.#connectionErrors++;
      this.#note(error);
    });
    cluster.on('node-error', (error: unknown) => {
      this.#connectionErrors++;
      this.#note(error);
    });
    let connected = false;
    let attempt = 0;
    const connect = (): void => {
      if (this.#closed) return;
      cluster.connect().then(
        () => {
          connected = true;
        },
        (error: unknown) => {
          // The first discovery failed (no root node answered): try again later, in the background.
          this.#note(error);
          const timer = setTimeout(connect, Math.min(50 * 2 ** Math.min(attempt++, 10), options.maxReconnectDelayMs ?? 2000));
          timer.unref();
        },
      );
    };
    const master = (redisKey: string) => cluster.slots[clusterSlot(redisKey)]?.master;
    return {
      ready: (redisKey) => {
        if (!connected) return false;
        const client = master(redisKey)?.client;
        return client === undefined || client.isReady; // no client yet: node-redis connects it on demand
      },
      target: (redisKey) => master(redisKey)?.address ?? 'unknown',
      send: (redisKey, readonly, args) => cluster.sendCommand(redisKey, readonly, args, { typeMapping: BUFFERS }),
      masters: async () => {
        if (!connected) return [];
        const senders: Array<(args: Arg[]) => Promise<unknown>> = [];
        for (const node of cluster.masters) {
          if (node.client !== undefined && !node.client.isReady) continue;
          const outcome = await settle(cluster.nodeClient(node), this.operationTimeoutMs);
          if (outcome.ok) senders.push((args) => outcome.value.sendCommand(args, { typeMapping: BUFFERS }));
        }
        return senders;
      },
      knownMasters: () => (connected ? cluster.masters.length : 0),
      connect,
      close: () => {
        if (connected) cluster.destroy();
      },
    };
  }

  #breaker(target: string): CircuitBreaker {
    let breaker = this.#breakers.get(target);
    if (breaker === undefined) {
      breaker = new CircuitBreaker(this.#breakerThreshold, this.#breakerOpenMs, this.#now);
      this.#breakers.set(target, breaker);
    }
    return breaker;
  }

  /** Sends one command through the key's breaker with the timeout; never rejects. */
  async #run(redisKey: string, readonly: boolean, args: Arg[]): Promise<Outcome<unknown> | { readonly ok: false; readonly reason: 'unavailable' | 'breaker' }> {
    if (this.#closed || !this.#backend.ready(redisKey)) return { ok: false, reason: 'unavailable' };
    const breaker = this.#breaker(this.#backend.target(redisKey));
    if (!breaker.allow()) return { ok: false, reason: 'breaker' };
    let promise: Promise<unknown>;
    try {
      promise = this.#backend.send(redisKey, readonly, args);
    } catch (error) {
      promise = Promise.reject(error);
    }
    const outcome = await settle(promise, this.operationTimeoutMs);
    if (outcome.ok) breaker.success();
    else {
      breaker.failure();
      this.#note(outcome.reason === 'timeout' ? new Error(`no answer within ${this.operationTimeoutMs} ms`) : outcome.error);
    }
    return outcome;
  }

  async get(key: string): Promise<Uint8Array | null> {
    const redisKey = redisKeyOf(this.keyPrefix, key);
    const outcome = await this.#run(redisKey, true, ['GET', redisKey]);
    if (!outcome.ok) {
      this.#failures[outcome.reason]++;
      return null;
    }
    const bytes = asBytes(outcome.value);
    if (bytes === null) {
      this.#misses.absent++;
      return null;
    }
    if (this.#verify) {
      try {
        await decodeStoreEntry(bytes);
      } catch (error) {
        const reason: StoreEntryReason | 'unknown' = error instanceof StoreEntryError ? error.reason : 'unknown';
        if (reason !== 'unknown') this.#corrupt[reason] = (this.#corrupt[reason] ?? 0) + 1;
        this.#failures.corrupt++;
        this.#note(error);
        void this.#run(redisKey, false, ['DEL', redisKey]); // a later save replaces it anyway; deleting spares the next reader
        return null;
      }
    }
    this.#hits++;
    return bytes;
  }

  /**
   * Which of `keys` hold a live entry, in one pipelined round trip per server (EXISTS each, sent together): keys
   * of one group (see groupedKey) share a slot, so a stream chain's lookup is one round trip to one node. A key
   * whose server failed reads as absent. Counts no hit or miss.
   */
  async hasMany(keys: readonly string[]): Promise<boolean[]> {
    const outcomes = await Promise.all(
      keys.map((key) => {
        const redisKey = redisKeyOf(this.keyPrefix, key);
        return this.#run(redisKey, true, ['EXISTS', redisKey]);
      }),
    );
    return outcomes.map((outcome) => {
      if (outcome.ok) return Number(outcome.value) > 0;
      this.#failures[outcome.reason]++;
      return false;
    });
  }

  async has(key: string): Promise<boolean> {
    return (await this.hasMany([key]))[0] === true;
  }

  /**
   * Queues the write and resolves at once: true when queued, false when dropped (queue full, server unavailable,
   * breaker open; counted in `writes.dropped`). A pinned entry is written without TTL (Redis cannot pin: use a
   * volatile-* maxmemory-policy so that only entries with a TTL are evicted). {@link flush} waits for the queue.
   */
  put(key: string, bytes: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    const redisKey = redisKeyOf(this.keyPrefix, key);
    const ttl = options.pinned === true ? null : options.ttlMs === undefined ? this.defaultTtlMs : options.ttlMs;
    if (ttl !== null && !(ttl > 0)) return Promise.reject(new InvalidArgumentError('ttlMs', `must be a positive number of milliseconds or null; got ${ttl}`));
    const drop = (reason: DroppedWrite): Promise<boolean> => {
      this.#dropped[reason]++;
      return Promise.resolve(false);
    };
    if (this.#closed || !this.#backend.ready(redisKey)) return drop('unavailable');
    if (!this.#breaker(this.#backend.target(redisKey)).wouldAllow()) return drop('breaker');
    if (this.#queue.length >= this.maxQueuedWrites || this.#queuedBytes + bytes.length > this.maxQueuedBytes) return drop('queue-full');
    this.#queue.push({ redisKey, bytes, ttlMs: ttl === null ? null : Math.max(1, Math.round(ttl)) });
    this.#queuedBytes += bytes.length;
    this.#pump();
    return Promise.resolve(true);
  }

  #pump(): void {
    while (this.#inFlight < this.#concurrency && this.#queue.length > 0) {
      const write = this.#queue.shift() as { redisKey: string; bytes: Uint8Array; ttlMs: number | null };
      this.#inFlight++;
      const value = Buffer.from(write.bytes.buffer, write.bytes.byteOffset, write.bytes.byteLength);
      const args: Arg[] = write.ttlMs === null ? ['SET', write.redisKey, value] : ['SET', write.redisKey, value, 'PX', String(write.ttlMs)];
      void this.#run(write.redisKey, false, args).then((outcome) => {
        this.#inFlight--;
        this.#queuedBytes -= write.bytes.length;
        if (outcome.ok) this.#written++;
        else this.#dropped[outcome.reason]++;
        this.#pump();
        if (this.#inFlight === 0 && this.#queue.length === 0) for (const resolve of this.#drained.splice(0)) resolve();
      });
    }
  }

  /** Resolves when every queued write has been written or dropped (each is bounded by the operation timeout). */
  flush(): Promise<void> {
    if (this.#inFlight === 0 && this.#queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drained.push(resolve));
  }

  async delete(key: string): Promise<boolean> {
    const redisKey = redisKeyOf(this.keyPrefix, key);
    const outcome = await this.#run(redisKey, false, ['DEL', redisKey]);
    if (!outcome.ok) {
      this.#failures[outcome.reason]++;
      return false;
    }
    const deleted = Number(outcome.value) > 0;
    if (deleted) this.#explicit++;
    return deleted;
  }

  /** Redis keys under the prefix on every reachable master (a master that fails contributes none). */
  async #scan(): Promise<Array<{ readonly redisKey: string; readonly send: (args: Arg[]) => Promise<unknown> }>> {
    const found: Array<{ redisKey: string; send: (args: Arg[]) => Promise<unknown> }> = [];
    for (const send of await this.#backend.masters()) {
      let cursor = '0';
      do {
        const outcome = await settle(send(['SCAN', cursor, 'MATCH', `${this.keyPrefix}:*`, 'COUNT', '1000']), this.operationTimeoutMs * 4);
        if (!outcome.ok || !Array.isArray(outcome.value)) break;
        const [next, batch] = outcome.value as [unknown, unknown[]];
        cursor = String(next);
        for (const redisKey of batch) found.push({ redisKey: String(redisKey), send });
      } while (cursor !== '0');
    }
    return found;
  }

  async keys(): Promise<string[]> {
    const keys: string[] = [];
    for (const { redisKey } of await this.#scan()) {
      const key = tierKeyOf(this.keyPrefix, redisKey);
      if (key !== null) keys.push(key);
    }
    return keys;
  }

  async #serverStats(): Promise<RedisServerStats & { entries: number; bytes: number }> {
    const masters = await this.#backend.masters();
    const sum = { evictedKeys: null as number | null, expiredKeys: null as number | null, maxmemoryBytes: null as number | null, usedMemoryBytes: null as number | null };
    let policy: string | null = null;
    let reachable = 0;
    const add = (field: keyof typeof sum, value: string | null): void => {
      if (value !== null && Number.isFinite(Number(value))) sum[field] = (sum[field] ?? 0) + Number(value);
    };
    for (const send of masters) {
      const outcome = await settle(send(['INFO']), this.operationTimeoutMs);
      if (!outcome.ok) continue;
      reachable++;
      const info = String(outcome.value);
      add('evictedKeys', infoField(info, 'evicted_keys'));
      add('expiredKeys', infoField(info, 'expired_keys'));
      add('maxmemoryBytes', infoField(info, 'maxmemory'));
      add('usedMemoryBytes', infoField(info, 'used_memory'));
      policy ??= infoField(info, 'maxmemory_policy');
    }
    const found = await this.#scan();
    const lengths = await Promise.all(found.map(({ redisKey, send }) => settle(send(['STRLEN', redisKey]), this.operationTimeoutMs)));
    const bytes = lengths.reduce((total, outcome) => total + (outcome.ok ? Number(outcome.value) : 0), 0);
    return { reachable, nodes: this.#backend.knownMasters(), ...sum, maxmemoryPolicy: policy, entries: found.length, bytes };
  }

  async stats(): Promise<RedisTierStats> {
    const { entries, bytes, ...server } = await this.#serverStats();
    const evictions: Record<EvictionReason, number> = { ttl: server.expiredKeys ?? 0, capacity: server.evictedKeys ?? 0, explicit: this.#explicit };
    let opens = 0;
    let state: BreakerState = 'closed';
    for (const breaker of this.#breakers.values()) {
      opens += breaker.opens;
      const s = breaker.state;
      if (s === 'open' || (s === 'half-open' && state === 'closed')) state = s;
    }
    const dropped = Object.values(this.#dropped).reduce((a, b) => a + b, 0);
    return {
      entries,
      bytes,
      pinnedEntries: 0,
      pinnedBytes: 0,
      hits: this.#hits,
      misses: { ...this.#misses },
      evictions,
      demotions: 0,
      rejected: dropped,
      target: this.#target,
      failures: { ...this.#failures },
      corrupt: { ...this.#corrupt },
      writes: { queued: this.#queue.length + this.#inFlight, queuedBytes: this.#queuedBytes, written: this.#written, dropped: { ...this.#dropped } },
      breaker: { state, opens },
      connectionErrors: this.#connectionErrors,
      lastError: this.#lastError,
      server,
    };
  }

  /** Waits for the queued writes (bounded by the timeouts), then closes the connections. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.flush();
    this.#closed = true;
    try {
      this.#backend.close();
    } catch (error) {
      this.#note(error);
    }
  }

  /** Whether the server (the first master of a cluster) is connected now. */
  get ready(): boolean {
    return this.#backend.ready(redisKeyOf(this.keyPrefix, '-'));
  }
}

/** Options of {@link openRedisTier}: the tier's, less the URL. */
export interface OpenRedisTierOptions extends Omit<RedisTierOptions, 'url'> {
  /** How long to wait for the first connection before returning the tier anyway (it keeps connecting). Default 1000. */
  readonly waitMs?: number;
}

/**
 * A Redis tier for a URL as a user writes it (the CLI's `--store redis://…`): one `redis://` or `rediss://` URL,
 * or several separated by commas (a cluster's root nodes). Waits up to `waitMs` for the connection; resolves with
 * the tier either way (an unreachable server is a tier that misses), and rejects only for a malformed URL.
 *
 * @throws InvalidArgumentError for a URL that is not redis:// or rediss:// (credentials redacted in the message).
 * @example
 * ```ts
 * const tier = await openRedisTier('rediss://app:s3cret@cache.internal:6380/2', { defaultTtlMs: 86_400_000 });
 * const cluster = await openRedisTier('redis://10.0.0.1:7000,redis://10.0.0.2:7000', { cluster: true });
 * ```
 */
export async function openRedisTier(url: string, options: OpenRedisTierOptions = {}): Promise<RedisTier> {
  const urls = url
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
  const { waitMs = 1000, ...rest } = options;
  const tier = new RedisTier({ ...rest, url: urls });
  const deadline = Date.now() + waitMs;
  while (!tier.ready && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  return tier;
}
