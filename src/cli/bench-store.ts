// The directory tier for the store benchmark: src/bench sits below src/node, so the CLI hands it in.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StoreBenchDirectory } from '../bench/cases/store.js';
import { openDirectoryTier } from '../node/directory-tier.js';

/**
 * Directory tiers in a fresh temp directory, and a plain file there for the fs.readFile baseline.
 *
 * @example
 * ```ts
 * const suite = storeSuite({ directory: await benchDirectory() });
 * ```
 */
export async function benchDirectory(): Promise<StoreBenchDirectory> {
  const root = await mkdtemp(join(tmpdir(), 'kvcompact-bench-store-'));
  let opened = 0;
  let plain = 0;
  return {
    open: () => openDirectoryTier({ directory: join(root, `tier-${opened++}`) }),
    plainFile: async (bytes) => {
      const path = join(root, `plain-${plain++}.bin`);
      await writeFile(path, bytes);
      return async () => {
        const buffer = await readFile(path);
        return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
      };
    },
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}
