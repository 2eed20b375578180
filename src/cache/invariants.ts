import { CacheInvariantError } from '../errors.js';
import type { BlockAllocator } from './block-allocator.js';
import type { CacheMetadata, PoolName } from './cache-metadata.js';
import { decodeBlockRef } from '../format/layout.js';

/**
 * Checks every structural invariant of a cache's host metadata and returns one line per violation (empty
 * when all hold). Cost is O(table size + pool size): meant for tests and debug builds, not every decode step.
 *
 * Checked: each used block is referenced by exactly `refCount` table entries across all live rows; the free
 * queue is a consistent list without duplicates holding exactly the refcount-0 blocks (never the null block);
 * token counts fit their blocks (only the last block partly filled); quantized entries precede full ones and are
 * full; the null block is never referenced; a head holds at least the tokens appended since its
 * last evicting compaction (`intactFrom`); rows of unused slots are empty and padding words are 0; no head
 * holds more tokens than its sequence ever received.
 *
 * @example
 * ```ts
 * const problems = checkInvariants(meta);
 * if (problems.length) console.error(problems.join('\n'));
 * ```
 */
export function checkInvariants(meta: CacheMetadata): string[] {
  const out: string[] = [];
  const { layers, kvHeads, blockSize } = meta.shape;
  const tables = meta.tables;

  const slotToId = new Map<number, number>();
  for (const id of meta.sequenceIds()) {
    const slot = meta.slotOf(id);
    const other = slotToId.get(slot);
    if (other !== undefined) out.push(`sequences ${other} and ${id} share slot ${slot}`);
    slotToId.set(slot, id);
  }
  if (slotToId.size + meta.freeSlotCount !== meta.seqSlots) {
    out.push(`${slotToId.size} live + ${meta.freeSlotCount} free slots != ${meta.seqSlots} slots`);
  }

  const words = tables.tableWords();
  for (let layer = 0; layer < layers; layer++) {
    // Block ids are local to a layer's pools: each layer's references are counted against its own allocators.
    const refs: Record<PoolName, Map<number, number>> = { full: new Map(), quant: new Map() };
    for (let slot = 0; slot < meta.seqSlots; slot++) {
      const id = slotToId.get(slot);
      for (let head = 0; head < kvHeads; head++) {
        const row = tables.row(slot, layer, head);
        const where = `seq ${id ?? '(free slot ' + slot + ')'} layer ${layer} head ${head}`;
        const entries = tables.entryView(row);
        const count = tables.tokenCount(row);
        const n = entries.length;
        for (let i = row * tables.maxBlocksPerHead + n; i < (row + 1) * tables.maxBlocksPerHead; i++) {
          if (words[i] !== 0) out.push(`${where}: padding word ${i} is ${words[i]}, not the null block`);
        }
        if (id === undefined) {
          if (n !== 0 || count !== 0) out.push(`${where}: unused slot holds ${n} blocks, ${count} tokens`);
          continue;
        }
        if (n === 0 ? count !== 0 : count > n * blockSize || count <= (n - 1) * blockSize) {
          out.push(`${where}: ${count} tokens in ${n} blocks of ${blockSize} (only the last may be partly filled)`);
        }
        if (count > meta.sequenceLength(id)) {
          out.push(`${where}: ${count} tokens but only ${meta.sequenceLength(id)} ever appended`);
        }
        const intact = meta.intactFrom(id, layer, head);
        if (intact > meta.sequenceLength(id) || count < meta.sequenceLength(id) - intact) {
          out.push(`${where}: holds every token from position ${intact} on, but ${count} tokens < ${meta.sequenceLength(id)} − ${intact}`);
        }
        let sawFull = false;
        let quantCount = 0;
        for (let i = 0; i < n; i++) {
          const { pool, block } = decodeBlockRef(entries[i] ?? 0);
          if (block === 0) out.push(`${where}: entry ${i} is the null block of the ${pool} pool`);
          if (block >= meta.pool(pool, layer).numBlocks) {
            out.push(`${where}: entry ${i} = block ${block} past the ${pool} pool's ${meta.pool(pool, layer).numBlocks} blocks`);
          }
          if (pool === 'quant') {
            quantCount++;
            if (sawFull) out.push(`${where}: quantized entry ${i} after a full entry`);
          } else {
            sawFull = true;
          }
          refs[pool].set(block, (refs[pool].get(block) ?? 0) + 1);
        }
        if (count < quantCount * blockSize) out.push(`${where}: a quantized block is partly filled`);
      }
    }
    for (const pool of ['full', 'quant'] as const) checkPool(meta.pool(pool, layer), layers === 1 ? pool : `layer ${layer} ${pool}`, refs[pool], out);
  }
  return out;
}

function checkPool(allocator: BlockAllocator, pool: string, refs: Map<number, number>, out: string[]): void {
  const queue = allocator.freeQueue();
  const backward = allocator.freeQueueBackward();
  const inQueue = new Set<number>();
  for (const b of queue) {
    if (inQueue.has(b)) out.push(`${pool} pool: block ${b} twice in the free queue (or the queue has a cycle)`);
    inQueue.add(b);
  }
  if (queue.length !== allocator.numFree) {
    out.push(`${pool} pool: free queue holds ${queue.length} blocks but numFree is ${allocator.numFree}`);
  }
  if (backward.length !== queue.length || backward.some((b, i) => b !== queue[queue.length - 1 - i])) {
    out.push(`${pool} pool: free queue back links disagree with forward links`);
  }
  if (inQueue.has(0)) out.push(`${pool} pool: the null block is in the free queue`);
  if (allocator.refCount(0) !== 0) out.push(`${pool} pool: the null block has refcount ${allocator.refCount(0)}`);
  for (let b = 1; b < allocator.numBlocks; b++) {
    const rc = allocator.refCount(b);
    const r = refs.get(b) ?? 0;
    if (rc !== r) out.push(`${pool} pool: block ${b} has refcount ${rc} but ${r} table references`);
    if ((rc === 0) !== inQueue.has(b)) {
      out.push(`${pool} pool: block ${b} refcount ${rc} but ${inQueue.has(b) ? '' : 'not '}in the free queue`);
    }
  }
  for (const b of inQueue) {
    if (b < 0 || b >= allocator.numBlocks) out.push(`${pool} pool: free queue holds out-of-range block ${b}`);
  }
  if (allocator.numUsed + allocator.numFree !== allocator.numBlocks - 1) {
    out.push(`${pool} pool: used ${allocator.numUsed} + free ${allocator.numFree} != ${allocator.numBlocks - 1}`);
  }
}

/**
 * Throws {@link CacheInvariantError} when {@link checkInvariants} finds anything.
 *
 * @example
 * ```ts
 * meta.planAppend(seq, 1);
 * assertInvariants(meta); // in tests after every operation
 * ```
 */
export function assertInvariants(meta: CacheMetadata): void {
  const problems = checkInvariants(meta);
  if (problems.length > 0) throw new CacheInvariantError(problems);
}
