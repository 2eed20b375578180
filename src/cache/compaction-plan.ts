import type { CacheMetadata } from './cache-metadata.js';
import { ensureFreeBlocksPerLayer, type GrowPool } from './pool-growth.js';
import { decodeBlockRef, encodeBlockRef } from '../format/layout.js';
import { InvalidArgumentError, OutOfBlocksError } from '../errors.js';
import { type CompactJob, IDENTITY_INDEX_BASE } from '../kernels/compress/compact-blocks.js';

/**
 * What one head looks like after the compaction.
 *
 * @example
 * ```ts
 * for (const head of plan.heads) if (head.rewritten) console.log(`L${head.layer}H${head.head}: ${head.before} → ${head.kept}`);
 * ```
 */
export interface HeadCompaction {
  readonly layer: number;
  readonly head: number;
  readonly row: number;
  readonly before: number;
  readonly kept: number;
  /** The head's new block list (reused entries keep their reference; new ones were allocated). */
  readonly entries: readonly number[];
  /** Tokens stored quantized after the compaction. */
  readonly quantizedTokens: number;
  /** True when the head's tokens move (eviction or re-quantization), false when its list is unchanged. */
  readonly rewritten: boolean;
}

/**
 * The host half of a compaction: destination blocks allocated, GPU jobs listed.
 *
 * @example
 * ```ts
 * const plan: CompactionPlan = planCompaction(cache.meta, input);
 * console.log(plan.jobs.length, plan.allocated.full.length, plan.allocated.quant.length);
 * ```
 */
export interface CompactionPlan {
  readonly jobs: readonly CompactJob[];
  readonly heads: readonly HeadCompaction[];
  /** Blocks allocated for the plan, per pool and layer (index = layer; released again if the GPU part fails). */
  readonly allocated: { readonly full: readonly (readonly number[])[]; readonly quant: readonly (readonly number[])[] };
}

/**
 * Inputs of {@link planCompaction}.
 */
export interface CompactionPlanInput {
  readonly seqId: number;
  /** Tokens to keep per (layer, head), index layer × kvHeads + head. kept === tokenCount keeps the head whole. */
  readonly kept: ArrayLike<number>;
  /** Quantize every whole block older than the recent window (requires a quantized pool). */
  readonly quantize: boolean;
  /** Tokens at the end of each head that stay in full precision (KIVI's residual). */
  readonly residual: number;
  /** Width of the kept-index rows (maxTokensPerHead): head `row`'s kept indices start at row × this. */
  readonly indexStride: number;
  /** Plan only these heads (index layer × kvHeads + head); the others stay exactly as they are. Default: all. */
  readonly only?: ReadonlySet<number>;
}

/**
 * Plans a compaction of one sequence: for every head, which destination blocks (quantized first, all whole; then
 * full, only the last partly filled) its kept tokens go to, and the GPU jobs that build them. A head that keeps
 * everything reuses the blocks already in place and only quantizes blocks that aged out of the recent window.
 * Allocates the destination blocks (all or nothing: OutOfBlocksError with nothing allocated); nothing else changes
 * until {@link commitCompaction}.
 *
 * @example
 * ```ts
 * const plan = planCompaction(meta, { seqId, kept: counts, quantize: true, residual: 32, indexStride: 4096 });
 * // run plan.jobs on the GPU, then:
 * commitCompaction(meta, seqId, plan);
 * ```
 */
export function planCompaction(meta: CacheMetadata, input: CompactionPlanInput): CompactionPlan {
  const { layers, kvHeads, blockSize } = meta.shape;
  if (input.kept.length !== layers * kvHeads) {
    throw new InvalidArgumentError('kept', `expected ${layers * kvHeads} counts (layers × kvHeads); got ${input.kept.length}`);
  }
  if (input.quantize && meta.quantLayout === null) {
    throw new InvalidArgumentError('bits', 'this cache has no quantized pool; create it with quantBits');
  }
  if (!Number.isInteger(input.residual) || input.residual < 0) {
    throw new InvalidArgumentError('residual', `must be a non-negative integer; got ${input.residual}`);
  }
  interface Draft {
    layer: number;
    head: number;
    row: number;
    before: number;
    kept: number;
    reused: number[];
    quantBlocks: number;
    fullBlocks: number;
    /** First logical (kept) index that goes into new blocks. */
    firstNew: number;
    identity: boolean;
    quantizedTokens: number;
  }
  const drafts: Draft[] = [];
  const quantNeeded = new Array<number>(layers).fill(0);
  const fullNeeded = new Array<number>(layers).fill(0);
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const index = layer * kvHeads + head;
      if (input.only && !input.only.has(index)) continue;
      const before = meta.tokenCount(input.seqId, layer, head);
      const kept = input.kept[index] ?? 0;
      if (!Number.isInteger(kept) || kept < 0 || kept > before) {
        throw new InvalidArgumentError('kept', `head (layer ${layer}, kv ${head}) holds ${before} tokens; cannot keep ${kept}`);
      }
      const entries = meta.headBlocks(input.seqId, layer, head);
      const existingQuant = entries.filter((entry) => decodeBlockRef(entry).pool === 'quant').length;
      const identity = kept === before;
      let quantizedTokens = input.quantize ? Math.floor(Math.max(0, kept - input.residual) / blockSize) * blockSize : 0;
      // Quantized tokens of a head kept whole stay quantized: there is no way back to full precision.
      if (identity) quantizedTokens = Math.max(quantizedTokens, existingQuant * blockSize);
      // Whole head kept: quantized blocks stay, full blocks that stay full stay; only aging blocks are rebuilt.
      const reusedQuant = identity ? Math.min(existingQuant, quantizedTokens / blockSize) : 0;
      const firstNew = identity ? reusedQuant * blockSize : 0;
      const quantBlocks = quantizedTokens / blockSize - reusedQuant;
      let fullBlocks = Math.ceil((kept - quantizedTokens) / blockSize);
      const reused = entries.slice(0, reusedQuant);
      let rewritten = !identity || quantBlocks > 0;
      if (identity && quantBlocks === 0) {
        // nothing moves: keep the whole list
        reused.splice(0, reused.length, ...entries);
        fullBlocks = 0;
        rewritten = false;
      }
      if (identity && quantBlocks > 0) {
        // full blocks after the newly quantized ones stay where they are
        const fullEntriesKept = entries.slice(existingQuant + quantBlocks);
        reused.push(...fullEntriesKept);
        fullBlocks = 0;
      }
      drafts.push({
        layer,
        head,
        row: meta.rowOf(input.seqId, layer, head),
        before,
        kept,
        reused,
        quantBlocks,
        fullBlocks,
        firstNew,
        identity: identity && rewritten,
        quantizedTokens,
      });
      quantNeeded[layer] = (quantNeeded[layer] ?? 0) + quantBlocks;
      fullNeeded[layer] = (fullNeeded[layer] ?? 0) + fullBlocks;
    }
  }
  // Every layer's pools are checked before any takes a block, so a shortage leaves every count untouched.
  for (let layer = 0; layer < layers; layer++) {
    for (const [pool, needed] of [['quant', quantNeeded], ['full', fullNeeded]] as const) {
      const n = needed[layer] ?? 0;
      const free = n > 0 ? meta.pool(pool, layer).numFree : 0;
      if (n > free) throw new OutOfBlocksError(pool, n, free, `layer ${layer}: grow it or compress harder`);
    }
  }
  const quantAllocated = quantNeeded.map((n, layer) => (n > 0 ? (meta.allocateBlocks('quant', layer, n) ?? []) : []));
  const fullAllocated = fullNeeded.map((n, layer) => (n > 0 ? (meta.allocateBlocks('full', layer, n) ?? []) : []));
  const jobs: CompactJob[] = [];
  const heads: HeadCompaction[] = [];
  const nextQuant = new Array<number>(layers).fill(0);
  const nextFull = new Array<number>(layers).fill(0);
  for (const draft of drafts) {
    const entries: number[] = [];
    const newQuant: number[] = [];
    const newFull: number[] = [];
    const l = draft.layer;
    for (let b = 0; b < draft.quantBlocks; b++) newQuant.push(quantAllocated[l]?.[(nextQuant[l] = (nextQuant[l] ?? 0) + 1) - 1] ?? 0);
    for (let b = 0; b < draft.fullBlocks; b++) newFull.push(fullAllocated[l]?.[(nextFull[l] = (nextFull[l] ?? 0) + 1) - 1] ?? 0);
    const addJob = (destEntry: number, start: number, count: number) => {
      jobs.push(
        draft.identity
          ? { row: draft.row, destEntry, count, indexBase: IDENTITY_INDEX_BASE, identityStart: start }
          : { row: draft.row, destEntry, count, indexBase: draft.row * input.indexStride + start, identityStart: 0 },
      );
    };
    const reusedQuantCount = draft.identity ? draft.firstNew / blockSize : 0;
    entries.push(...draft.reused.slice(0, reusedQuantCount));
    newQuant.forEach((block, b) => {
      const entry = encodeBlockRef('quant', block);
      entries.push(entry);
      addJob(entry, draft.firstNew + b * blockSize, blockSize);
    });
    if (draft.identity) {
      entries.push(...draft.reused.slice(reusedQuantCount));
    } else if (draft.fullBlocks === 0 && draft.quantBlocks === 0) {
      entries.push(...draft.reused);
    }
    newFull.forEach((block, b) => {
      const entry = encodeBlockRef('full', block);
      entries.push(entry);
      const start = draft.quantizedTokens + b * blockSize;
      addJob(entry, start, Math.min(blockSize, draft.kept - start));
    });
    heads.push({
      layer: draft.layer,
      head: draft.head,
      row: draft.row,
      before: draft.before,
      kept: draft.kept,
      entries,
      quantizedTokens: draft.quantizedTokens,
      rewritten: draft.quantBlocks + draft.fullBlocks > 0,
    });
  }
  return { jobs, heads, allocated: { full: fullAllocated, quant: quantAllocated } };
}

/**
 * Commits a planned compaction after its GPU work completed: new block lists in, old blocks back to the pools.
 *
 * @example
 * ```ts
 * await gpu.device.queue.onSubmittedWorkDone(); // the compaction jobs have run
 * commitCompaction(cache.meta, seq, plan);
 * ```
 */
export function commitCompaction(meta: CacheMetadata, seqId: number, plan: CompactionPlan): void {
  for (const head of plan.heads) {
    if (!head.rewritten && head.kept === head.before) continue;
    meta.replaceHeadBlocks(seqId, head.layer, head.head, head.entries, head.kept);
  }
}

/**
 * Gives back a plan's destination blocks when its GPU work failed; the cache stays as it was.
 *
 * @example
 * ```ts
 * try { await gpu.device.queue.onSubmittedWorkDone(); }
 * catch (err) { abandonCompaction(cache.meta, plan); throw err; }
 * ```
 */
export function abandonCompaction(meta: CacheMetadata, plan: CompactionPlan): void {
  plan.allocated.full.forEach((blocks, layer) => meta.releaseBlocks('full', layer, blocks));
  plan.allocated.quant.forEach((blocks, layer) => meta.releaseBlocks('quant', layer, blocks));
}

/**
 * Blocks one head holds after a compaction and the blocks the compaction allocates for it, with
 * {@link planCompaction}'s arithmetic (index layer × kvHeads + head).
 */
export interface HeadBlocksAfter {
  /** The head's layer (whose pools the new blocks come from). */
  readonly layer: number;
  readonly quantBlocks: number;
  readonly fullBlocks: number;
  readonly newQuant: number;
  readonly newFull: number;
}

/**
 * What {@link planCompaction} would allocate and leave, computed without allocating: the auto chooser predicts
 * bytes with it and {@link planCompactionWithGrowth} grows the pools with it before planning.
 *
 * @example
 * ```ts
 * const heads = compactionBlocks(meta, { seqId, kept, quantize: true, residual: 32, indexStride });
 * const newFull = heads.reduce((n, h) => n + h.newFull, 0);
 * ```
 */
export function compactionBlocks(meta: CacheMetadata, input: Omit<CompactionPlanInput, 'indexStride'>): HeadBlocksAfter[] {
  const { layers, kvHeads, blockSize } = meta.shape;
  const out: HeadBlocksAfter[] = [];
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      if (input.only && !input.only.has(layer * kvHeads + head)) continue;
      const before = meta.tokenCount(input.seqId, layer, head);
      const kept = input.kept[layer * kvHeads + head] ?? before;
      const entries = meta.tables.entryView(meta.rowOf(input.seqId, layer, head));
      let existingQuant = 0;
      for (let i = 0; i < entries.length; i++) if (decodeBlockRef(entries[i] ?? 0).pool === 'quant') existingQuant++;
      const identity = kept === before;
      let quantTokens = input.quantize ? Math.floor(Math.max(0, kept - input.residual) / blockSize) * blockSize : 0;
      if (identity) quantTokens = Math.max(quantTokens, existingQuant * blockSize);
      const quantBlocks = quantTokens / blockSize;
      const fullBlocks = Math.ceil((kept - quantTokens) / blockSize);
      out.push(
        identity
          ? { layer, quantBlocks, fullBlocks, newQuant: quantBlocks - existingQuant, newFull: 0 }
          : { layer, quantBlocks, fullBlocks, newQuant: quantBlocks, newFull: fullBlocks },
      );
    }
  }
  return out;
}

/**
 * {@link planCompaction} after growing each pool (by the shared rule of `growthFor`) so that every block it
 * allocates is free. OutOfBlocksError names the pool that the byte budget cannot grow enough.
 */
export function planCompactionWithGrowth(meta: CacheMetadata, input: CompactionPlanInput, grow: GrowPool): CompactionPlan {
  const { layers } = meta.shape;
  const newQuant = new Array<number>(layers).fill(0);
  const newFull = new Array<number>(layers).fill(0);
  for (const head of compactionBlocks(meta, input)) {
    newQuant[head.layer] = (newQuant[head.layer] ?? 0) + head.newQuant;
    newFull[head.layer] = (newFull[head.layer] ?? 0) + head.newFull;
  }
  ensureFreeBlocksPerLayer(meta, 'full', newFull, grow, 0, true);
  if (input.quantize && newQuant.some((n) => n > 0)) ensureFreeBlocksPerLayer(meta, 'quant', newQuant, grow, 0, true);
  return planCompaction(meta, input);
}
