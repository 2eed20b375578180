/**
 * The persistent store tier of a browser: the origin private file system (OPFS) where the browser has it, else
 * IndexedDB. Both are FileTier backends (file-tier.ts keeps the index, limits, TTLs, pinning, eviction), so this
 * file only moves bytes:
 *
 *   - OPFS: a write goes to a `.tmp-` file through createWritable (whose bytes reach the file only at close) and
 *     is then moved onto the entry's name, so a tab closed mid-write leaves a temp file (removed at the next
 *     open), never a partial entry. Where `move` is missing the write goes to the name itself: a torn write is
 *     then an entry the strict reader refuses (a miss), still never data.
 *   - IndexedDB: the bytes and the listing record are put in one transaction, which commits all or nothing.
 *
 * Browser-only (no Node has OPFS or IndexedDB): tested by Playwright; `browserStorageKind` is pure and tested in
 * Node.
 */
import { InvalidArgumentError } from '../errors.js';
import { FileTier, type BackendFile, type FileTierBackend, type FileTierOptions } from './file-tier.js';

/** Which storage {@link openBrowserTier} uses. */
export type BrowserStorageKind = 'opfs' | 'indexeddb';

/** What the choice looks at (the global scope of a page or a worker). */
export interface BrowserStorageScope {
  readonly navigator?: { readonly storage?: { readonly getDirectory?: unknown } };
  readonly indexedDB?: unknown;
}

/** OPFS when `navigator.storage.getDirectory` exists, else IndexedDB when it exists, else null. */
export function browserStorageKind(scope: BrowserStorageScope): BrowserStorageKind | null {
  if (typeof scope.navigator?.storage?.getDirectory === 'function') return 'opfs';
  if (scope.indexedDB !== undefined && scope.indexedDB !== null) return 'indexeddb';
  return null;
}

const TEMP_PREFIX = '.tmp-';

// The async iteration of a directory is in lib.dom.asynciterable, which this project's lib setting leaves out.
interface IterableDirectory {
  entries(): AsyncIterableIterator<[string, FileSystemHandle]>;
}
interface MovableFile {
  move?(name: string): Promise<void>;
}

function isNotFound(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { name?: unknown }).name === 'NotFoundError';
}

/** The {@link FileTierBackend} of an OPFS directory. */
export class OpfsBackend implements FileTierBackend {
  constructor(readonly directory: FileSystemDirectoryHandle) {}

  async list(): Promise<BackendFile[]> {
    const files: BackendFile[] = [];
    for await (const [name, handle] of (this.directory as unknown as IterableDirectory).entries()) {
      if (handle.kind !== 'file') continue;
      if (name.startsWith(TEMP_PREFIX)) {
        await this.remove(name);
        continue;
      }
      if (!name.endsWith('.kvc')) continue;
      const file = await (handle as FileSystemFileHandle).getFile();
      files.push({ name, bytes: file.size, modifiedMs: file.lastModified });
    }
    return files;
  }

  async read(name: string): Promise<Uint8Array | null> {
    try {
      const file = await (await this.directory.getFileHandle(name)).getFile();
      return new Uint8Array(await file.arrayBuffer());
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  async #writeThrough(handle: FileSystemFileHandle, bytes: Uint8Array): Promise<void> {
    const stream = await handle.createWritable();
    try {
      await stream.write(bytes as Uint8Array<ArrayBuffer>);
      await stream.close();
    } catch (error) {
      await stream.abort().catch(() => undefined);
      throw error;
    }
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    const temp = `${TEMP_PREFIX}${crypto.randomUUID()}`;
    const handle = (await this.directory.getFileHandle(temp, { create: true })) as FileSystemFileHandle & MovableFile;
    if (typeof handle.move !== 'function') {
      await this.remove(temp);
      await this.#writeThrough(await this.directory.getFileHandle(name, { create: true }), bytes);
      return;
    }
    try {
      await this.#writeThrough(handle, bytes);
    } catch (error) {
      await this.remove(temp);
      throw error;
    }
    try {
      await handle.move(name);
    } catch {
      // Some versions refuse to move onto an existing name: remove it, then move (a miss in between, never data).
      await this.remove(name);
      await handle.move(name);
    }
  }

  async remove(name: string): Promise<void> {
    try {
      await this.directory.removeEntry(name);
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
}

const FILES = 'files';
const LISTING = 'listing';

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

/** The {@link FileTierBackend} of an IndexedDB database: bytes in one object store, sizes in another. */
export class IndexedDbBackend implements FileTierBackend {
  private constructor(private readonly db: IDBDatabase) {}

  static async open(factory: IDBFactory, database: string): Promise<IndexedDbBackend> {
    const req = factory.open(database, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore(FILES);
      req.result.createObjectStore(LISTING);
    };
    return new IndexedDbBackend(await request(req));
  }

  async list(): Promise<BackendFile[]> {
    const tx = this.db.transaction(LISTING, 'readonly');
    const records = (await request(tx.objectStore(LISTING).getAll())) as BackendFile[];
    return records.filter((r) => typeof r?.name === 'string' && r.name.endsWith('.kvc'));
  }

  async read(name: string): Promise<Uint8Array | null> {
    const tx = this.db.transaction(FILES, 'readonly');
    const value: unknown = await request(tx.objectStore(FILES).get(name));
    return value instanceof Uint8Array ? value : null;
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    const tx = this.db.transaction([FILES, LISTING], 'readwrite');
    const done = committed(tx);
    tx.objectStore(FILES).put(bytes, name);
    tx.objectStore(LISTING).put({ name, bytes: bytes.length, modifiedMs: Date.now() } satisfies BackendFile, name);
    await done;
  }

  async remove(name: string): Promise<void> {
    const tx = this.db.transaction([FILES, LISTING], 'readwrite');
    const done = committed(tx);
    tx.objectStore(FILES).delete(name);
    tx.objectStore(LISTING).delete(name);
    await done;
  }
}

/** Options of {@link openBrowserTier}: FileTier's; the name defaults to the storage kind. */
export interface BrowserTierOptions extends Omit<FileTierOptions, 'name'> {
  readonly name?: string;
  /** OPFS directory / IndexedDB database the entries live in. Default 'kvcompact-store'. */
  readonly location?: string;
  /** Default: {@link browserStorageKind} of globalThis. */
  readonly kind?: BrowserStorageKind;
}

/**
 * Opens the browser's persistent tier (OPFS, else IndexedDB), indexing the entries saved by earlier visits.
 *
 * @throws InvalidArgumentError where the scope has neither OPFS nor IndexedDB.
 * @example
 * ```ts
 * const disk = await openBrowserTier({ maxBytes: 512 << 20, eviction: 'priority-decay' });
 * const store = new ContextStore({ tiers: [new MemoryTier({ maxBytes: 64 << 20, next: disk }), disk], namespace, blockSize: 16 });
 * ```
 */
export async function openBrowserTier(options: BrowserTierOptions = {}): Promise<FileTier> {
  const { name, location = 'kvcompact-store', kind = browserStorageKind(globalThis as BrowserStorageScope), ...rest } = options;
  if (kind === null) throw new InvalidArgumentError('kind', 'this scope has neither OPFS (navigator.storage.getDirectory) nor IndexedDB; use a MemoryTier only');
  const backend =
    kind === 'opfs'
      ? new OpfsBackend(await (await navigator.storage.getDirectory()).getDirectoryHandle(location, { create: true }))
      : await IndexedDbBackend.open(indexedDB, location);
  return FileTier.open(backend, { ...rest, name: name ?? kind });
}
