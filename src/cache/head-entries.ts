import { InvalidArgumentError, LimitExceededError } from '../errors.js';
import { decodeBlockRef } from '../format/layout.js';
import type { BlockAllocator } from './block-allocator.js';
import type { PoolName } from './metadata-types.js';

/**
 * Checks a head's new block list before it replaces the old one: every entry a held, usable block listed once,
 * quantized blocks first and completely filled, only the last block partly filled, at most `maxBlocksPerHead`.
 * Returns the set of entries (the caller releases old entries not in it). InvalidArgumentError or
 * LimitExceededError with nothing changed.
 */
export function validateHeadEntries(
  newEntries: readonly number[],
  tokenCount: number,
  limits: { readonly blockSize: number; readonly maxBlocksPerHead: number; pool(pool: PoolName): BlockAllocator },
): Set<number> {
  if (!Number.isSafeInteger(tokenCount) || tokenCount < 0) {
    throw new InvalidArgumentError('tokenCount', `must be a non-negative integer; got ${tokenCount}`);
  }
  if (newEntries.length > limits.maxBlocksPerHead) {
    throw new LimitExceededError('maxBlocksPerHead', newEntries.length, limits.maxBlocksPerHead, 'keep fewer tokens');
  }
  const seen = new Set<number>();
  let quantCount = 0;
  let sawFull = false;
  for (const entry of newEntries) {
    if (!Number.isInteger(entry) || entry < 0 || entry > 0xffff_ffff) {
      throw new InvalidArgumentError('newEntries', `${entry} is not a block-table word`);
    }
    const { pool, block } = decodeBlockRef(entry);
    const allocator = limits.pool(pool);
    if (block === 0 || block >= allocator.numBlocks) {
      throw new InvalidArgumentError('newEntries', `block ${block} is not a usable block of the ${pool} pool`);
    }
    if (allocator.refCount(block) === 0) {
      throw new InvalidArgumentError('newEntries', `block ${block} of the ${pool} pool is free; allocate it first`);
    }
    if (seen.has(entry)) {
      throw new InvalidArgumentError('newEntries', `block ${block} of the ${pool} pool is listed twice`);
    }
    seen.add(entry);
    if (pool === 'quant') {
      if (sawFull) throw new InvalidArgumentError('newEntries', 'quantized blocks must precede full blocks');
      quantCount++;
    } else {
      sawFull = true;
    }
  }
  const n = newEntries.length;
  if (n === 0 ? tokenCount !== 0 : tokenCount > n * limits.blockSize || tokenCount <= (n - 1) * limits.blockSize) {
    throw new InvalidArgumentError(
      'tokenCount',
      `${tokenCount} tokens do not fit ${n} blocks of ${limits.blockSize} (only the last block may be partly filled)`,
    );
  }
  if (tokenCount < quantCount * limits.blockSize) {
    throw new InvalidArgumentError(
      'newEntries',
      'quantized blocks must be completely filled; keep the partial remainder in a full-pool block',
    );
  }
  return seen;
}
