import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import type { AgreementAccumulator } from '../eval/metrics.js';
import { decodeBlockRef } from '../format/layout.js';
import type { GenerationQuality, HeadBlocks } from './generation-types.js';

// Views of a generating sequence's cache for reports and step snapshots (apart from generator.ts, which drives it).

/** Tokens each (layer, KV head) of the sequence keeps. */
export function keptPerHead(cache: PagedKvCache, seqId: number): number[][] {
  const { layers, kvHeads } = cache.shape;
  return Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, h) => cache.tokenCount(seqId, l, h)));
}

/** Quantized and full blocks each (layer, KV head) of the sequence holds. */
export function headBlocks(cache: PagedKvCache, seqId: number): HeadBlocks[][] {
  const { layers, kvHeads } = cache.shape;
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: kvHeads }, (_, h) => {
      let quant = 0;
      let full = 0;
      for (const entry of cache.meta.headBlocks(seqId, l, h)) {
        if (decodeBlockRef(entry).pool === 'quant') quant++;
        else full++;
      }
      return { quant, full, tokens: cache.tokenCount(seqId, l, h) };
    }),
  );
}

/** The agreement fields of a quality report; an empty comparison agrees on nothing (0, not NaN). */
export function agreementOf(agreement: AgreementAccumulator): Pick<GenerationQuality, 'agreement' | 'agreed' | 'compared' | 'meanKl'> {
  const { agreement: share, agreed, compared, meanKl } = agreement.result();
  return compared > 0 ? { agreement: share, agreed, compared, meanKl } : { agreement: 0, agreed, compared, meanKl: 0 };
}
