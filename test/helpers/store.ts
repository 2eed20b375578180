// Shared pieces of the store tests: a namespace, streams and entries.
import type { ContextStream } from '../../src/store/context-stream.js';
import type { StoreEntry } from '../../src/store/entry-format.js';
import type { StoreNamespace } from '../../src/store/keys.js';

export const FINGERPRINT = 'sha256:test-model';
export const SHAPE = { layers: 2, kvHeads: 2, headDim: 4, blockSize: 4 };

export function storeNamespace(tenantSalt = 'tenant-a'): StoreNamespace {
  return {
    modelFingerprint: FINGERPRINT,
    settings: { policy: 'snapkv', budgetMode: 'uniform', budget: 8, bits: 4, sinks: 2, recent: 2, window: 2, decodeSchedule: null },
    tenantSalt,
  };
}

/** A prompt stream of `n` tokens starting at `first`. */
export function promptStream(n: number, first = 1): ContextStream {
  return [{ kind: 'prefill', tokens: Array.from({ length: n }, (_, i) => first + i) }];
}

/** An entry covering `tokenCount` tokens whose one section is filled with `fill`. */
export function testEntry(tokenCount: number, fill = 7, sectionBytes = 64): StoreEntry {
  return {
    layoutVersion: 1,
    shape: SHAPE,
    settings: { policy: 'snapkv' },
    fingerprint: FINGERPRINT,
    tokenCount,
    sections: new Map([['blocks', new Uint8Array(sectionBytes).fill(fill)]]),
  };
}

export function fakeClock(start = 0): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}
