import { PagedKvCache } from '../../engine/paged-kv-cache.js';
import type { SequenceSnapshot } from '../../engine/sequence-snapshot.js';
import type { GpuContext } from '../../gpu/context.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';

/** Four layers of 8 KV heads × 128 (the compress suite's shape), f16, one sequence filled at random. */
const SHAPE = { layers: 4, kvHeads: 8, headDim: 128, blockSize: 16, nHeads: 32 } as const;
const SOURCE = 0;
const RESTORED = 1;

type Restore = 'resident' | 'import';

async function prepareRestore(gpu: GpuContext, context: number, restore: Restore): Promise<PreparedCase> {
  const { layers, kvHeads, headDim, blockSize, nHeads } = SHAPE;
  const blocksPerHead = Math.ceil(context / blockSize);
  const cache = PagedKvCache.create(gpu, {
    shape: { layers, kvHeads, headDim, blockSize },
    nHeads,
    fullFormat: 'f16',
    seqSlots: 2,
    maxTokensPerHead: blocksPerHead * blockSize,
    // Room for the source and a restored copy (the resident fork shares blocks; an import allocates its own).
    initialFullBlocks: 2 * layers * kvHeads * blocksPerHead + 16,
    maxBytes: Number.MAX_SAFE_INTEGER,
  });
  cache.addSequence(SOURCE);
  const floats = layers * context * kvHeads * headDim;
  await cache.append(SOURCE, randomFloats(floats, 31), randomFloats(floats, 32));
  const snapshot: SequenceSnapshot | null = restore === 'import' ? await cache.exportSequence(SOURCE) : null;
  const blockBytes = cache.sequenceBytes(SOURCE).bytes;
  return {
    // What restoring by copying would move: the blocks read once and written once.
    bytes: 2 * blockBytes,
    items: { count: context, unit: 'token' },
    run: async (clock) => {
      try {
        if (snapshot) await clock(() => cache.importSequence(RESTORED, snapshot));
        else await clock(() => cache.fork(SOURCE, RESTORED));
      } finally {
        await cache.freeSequence(RESTORED);
      }
    },
    destroy: () => cache.destroy(),
  };
}

/**
 * Restore speed of the store's GPU side, against the copy kernel moving the same bytes: a GPU-resident hit (a
 * fork: the restored sequence shares the blocks by reference count, so no block moves) and the import of a
 * snapshot from host memory (what a hit in the memory, directory, browser or Redis tier costs once its bytes are
 * read: blocks, statistics and window written to the GPU, the table rows uploaded).
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [storeGpuSuite], benchSettings(true));
 * ```
 */
export const storeGpuSuite: BenchSuite = {
  name: 'store-gpu',
  description: 'restoring a saved state into a sequence: GPU-resident fork and snapshot import, 4 layers × 8 KV heads × d128, f16',
  counts: "the sequence's block bytes read + written once (what a copy restore moves)",
  cases: (settings) =>
    (settings.quick ? [1024] : [1024, 4096]).flatMap((context) =>
      (['resident', 'import'] as const).map(
        (restore): BenchCase => ({
          name: `store-gpu/${restore}/${formatTokens(context)}`,
          shape: `ctx ${formatTokens(context)} · 4L · 8kv · d128 · f16 · ${restore === 'resident' ? 'fork (zero copy)' : 'importSequence of a host snapshot'}`,
          series: `restore ${restore}`,
          context,
          setup: (gpu) => prepareRestore(gpu, context, restore),
        }),
      ),
    ),
};
