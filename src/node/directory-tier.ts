/**
 * The persistent store tier of Node: one file per entry in a directory (the index, limits, TTLs, pinning,
 * eviction and demotion are FileTier's, src/store/file-tier.ts). A write goes to a temp file in the same
 * directory, is fsynced, then renamed over the entry's name (atomic on POSIX and NTFS), and the directory is
 * fsynced so the rename survives a power cut: a crash mid-write leaves a temp file, never a partial entry, and the
 * next open removes the temp files.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { FileTier, type BackendFile, type FileTierBackend, type FileTierOptions } from '../store/file-tier.js';

/** Prefix of the temp files a write leaves behind when it dies. */
export const TEMP_PREFIX = '.tmp-';

/** Bytes per write call: a large entry is written in pieces, so no single call holds the event loop for long. */
const CHUNK_BYTES = 4 << 20;

function isMissing(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === 'ENOENT';
}

async function syncDirectory(directory: string): Promise<void> {
  let handle;
  try {
    handle = await open(directory, 'r');
    await handle.sync();
  } catch {
    // Windows cannot open or fsync a directory; the rename is durable there without it.
  } finally {
    await handle?.close();
  }
}

/** The {@link FileTierBackend} of a directory. */
export class DirectoryBackend implements FileTierBackend {
  constructor(readonly directory: string) {}

  async list(): Promise<BackendFile[]> {
    await mkdir(this.directory, { recursive: true });
    const files: BackendFile[] = [];
    for (const name of await readdir(this.directory)) {
      const path = join(this.directory, name);
      if (name.startsWith(TEMP_PREFIX)) {
        await unlink(path).catch(() => undefined); // a write that died: never an entry
        continue;
      }
      if (!name.endsWith('.kvc')) continue;
      try {
        const info = await stat(path);
        if (info.isFile()) files.push({ name, bytes: info.size, modifiedMs: info.mtimeMs });
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    return files;
  }

  async read(name: string): Promise<Uint8Array | null> {
    try {
      const buffer = await readFile(join(this.directory, name));
      return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    } catch (error) {
      if (isMissing(error)) return null;
      throw error;
    }
  }

  async write(name: string, bytes: Uint8Array): Promise<void> {
    const temp = join(this.directory, `${TEMP_PREFIX}${randomUUID()}`);
    const handle = await open(temp, 'wx');
    try {
      for (let offset = 0; offset < bytes.length; offset += CHUNK_BYTES) {
        const length = Math.min(CHUNK_BYTES, bytes.length - offset);
        let written = 0;
        while (written < length) written += (await handle.write(bytes, offset + written, length - written)).bytesWritten;
      }
      await handle.sync();
      await handle.close();
      await rename(temp, join(this.directory, name));
    } catch (error) {
      await handle.close().catch(() => undefined);
      await unlink(temp).catch(() => undefined);
      throw error;
    }
    await syncDirectory(this.directory);
  }

  async remove(name: string): Promise<void> {
    try {
      await unlink(join(this.directory, name));
    } catch (error) {
      if (!isMissing(error)) throw error;
    }
  }

  async touch(name: string): Promise<void> {
    const now = new Date();
    await utimes(join(this.directory, name), now, now).catch(() => undefined); // recency only: never fails a hit
  }
}

/** Options of {@link openDirectoryTier}: FileTier's, with the directory; the name defaults to 'directory'. */
export interface DirectoryTierOptions extends Omit<FileTierOptions, 'name'> {
  /** Created when missing. */
  readonly directory: string;
  readonly name?: string;
}

/**
 * Opens (creating when missing) a directory tier: removes temp files of writes that died, indexes the entries
 * there.
 *
 * @example
 * ```ts
 * const disk = await openDirectoryTier({ directory: '.kvcompact/store', maxBytes: 8 << 30, eviction: 'priority-decay' });
 * const memory = new MemoryTier({ maxBytes: 256 << 20, next: disk });
 * const store = new ContextStore({ tiers: [memory, disk], namespace, blockSize: 16 });
 * ```
 */
export async function openDirectoryTier(options: DirectoryTierOptions): Promise<FileTier> {
  const { directory, name, ...rest } = options;
  return FileTier.open(new DirectoryBackend(directory), { ...rest, name: name ?? 'directory' });
}
