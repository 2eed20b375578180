import { describe, expect, it } from 'vitest';
import { resolveCacheOptions } from '../src/cache/cache-options.js';
import { InvalidArgumentError } from '../src/errors.js';
import { cacheOptionsForModel } from '../src/model/cache-options.js';

// stories260K's attention: 5 layers, 8 query heads over 4 KV heads of 8 channels
const MODEL = { nLayers: 5, nHeads: 8, nKvHeads: 4, headSize: 8 };

describe('cacheOptionsForModel', () => {
  it("shapes the cache after the model and picks the pools from the bits", () => {
    expect(cacheOptionsForModel(MODEL)).toEqual({
      shape: { layers: 5, kvHeads: 4, headDim: 8, blockSize: 16 },
      nHeads: 8,
      fullFormat: 'f16',
    });
    expect(cacheOptionsForModel(MODEL, { bits: 32, blockSize: 8 })).toMatchObject({ fullFormat: 'f32', shape: { blockSize: 8 } });
    expect(cacheOptionsForModel(MODEL, { bits: 32 })).not.toHaveProperty('quantBits');
    expect(cacheOptionsForModel(MODEL, { bits: 4 })).toMatchObject({ fullFormat: 'f16', quantBits: 4 });
    expect(cacheOptionsForModel(MODEL, { bits: 2, fullFormat: 'f32' })).toMatchObject({ fullFormat: 'f32', quantBits: 2 });
    expect(cacheOptionsForModel(MODEL, { bits: 16 })).not.toHaveProperty('quantBits');
  });

  it('passes the other cache options through, and the cache accepts what it builds', () => {
    const options = cacheOptionsForModel(MODEL, {
      bits: 8, seqSlots: 3, maxTokensPerHead: 512, observationWindow: 16, initialFullBlocks: 40, maxBytes: 1 << 20,
    });
    expect(options).toMatchObject({ seqSlots: 3, maxTokensPerHead: 512, observationWindow: 16, initialFullBlocks: 40, maxBytes: 1 << 20 });
    const resolved = resolveCacheOptions(options);
    expect(resolved.metadata.quantFormat).toBe('int8');
    expect(resolved.metadata.maxBlocksPerHead).toBe(32);
    expect(resolved.observationWindow).toBe(16);
  });

  it('rejects bits it cannot store', () => {
    expect(() => cacheOptionsForModel(MODEL, { bits: 3 as 4 })).toThrow(InvalidArgumentError);
    expect(() => cacheOptionsForModel(MODEL, { bits: 32, fullFormat: 'f16' })).toThrow(/fullFormat/);
  });
});
