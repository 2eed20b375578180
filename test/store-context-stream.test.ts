import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { normalizeStream, streamChain, streamTokenIds, streamTokens, type ContextStream } from '../src/store/context-stream.js';
import { namespaceHash, type StoreNamespace } from '../src/store/keys.js';

const namespace: StoreNamespace = {
  modelFingerprint: 'sha256:stories260K',
  settings: { policy: 'h2o', budgetMode: 'uniform', budget: 32, bits: 4, sinks: 4, recent: 8, window: null, decodeSchedule: null },
  tenantSalt: 'tenant-a',
};
const ids = (n: number, from = 0): number[] => Array.from({ length: n }, (_, i) => (from + i) * 31 % 512);

describe('context streams', () => {
  it('normalize: adjacent segments of one kind join, empty ones and repeated compressions go', () => {
    const stream: ContextStream = [
      { kind: 'prefill', tokens: [1, 2] },
      { kind: 'prefill', tokens: [] },
      { kind: 'prefill', tokens: [3] },
      { kind: 'compress' },
      { kind: 'compress' },
      { kind: 'decode', tokens: [4] },
      { kind: 'decode', tokens: [5] },
    ];
    expect(normalizeStream(stream)).toEqual([
      { kind: 'prefill', tokens: [1, 2, 3] },
      { kind: 'compress' },
      { kind: 'decode', tokens: [4, 5] },
    ]);
    expect(streamTokens(stream)).toBe(5);
    expect(streamTokenIds(stream)).toEqual([1, 2, 3, 4, 5]);
    expect(() => normalizeStream([{ kind: 'prefill', tokens: [1.5] }])).toThrow(InvalidArgumentError);
    expect(() => normalizeStream([{ kind: 'prefill', tokens: [-1] }])).toThrow(InvalidArgumentError);
    expect(() => normalizeStream([{ kind: 'replay' } as unknown as ContextStream[number]])).toThrow(InvalidArgumentError);
  });

  it('links at every block of positions, at every segment end and at a compression; the first link is SHA-256(H0 ‖ kind ‖ ids)', async () => {
    const chain = await streamChain(namespace, [{ kind: 'prefill', tokens: ids(20) }, { kind: 'compress' }, { kind: 'decode', tokens: ids(14, 20) }], 16);
    expect(chain.links.map((l) => [l.tokens, l.segmentEnd])).toEqual([
      [16, false],
      [20, true], // the prompt's end
      [20, true], // the compression
      [32, false], // the decode run reaches position 32: a block boundary counted from position 0
      [34, true],
    ]);
    const h0 = await namespaceHash(namespace, 16);
    const first = new Uint8Array(32 + 1 + 16 * 4);
    first.set(h0);
    first[32] = 1;
    ids(16).forEach((id, i) => new DataView(first.buffer).setUint32(33 + 4 * i, id, true));
    expect(chain.links[0]?.key).toBe(createHash('sha256').update(first).digest('hex'));
    expect(chain.links[2]?.segmentsUpTo).toEqual([{ kind: 'prefill', tokens: ids(20) }, { kind: 'compress' }]);
    expect(chain.links[3]?.segmentsUpTo).toEqual([{ kind: 'prefill', tokens: ids(20) }, { kind: 'compress' }, { kind: 'decode', tokens: ids(12, 20) }]);
    expect(new Set(chain.links.map((l) => l.key)).size).toBe(chain.links.length);
  });

  it('a prefix of the operations has a prefix of the links; other operations on the same tokens have other keys', async () => {
    const prompt = ids(40);
    const long = await streamChain(namespace, [{ kind: 'prefill', tokens: prompt }, { kind: 'decode', tokens: ids(9, 40) }], 16);
    const short = await streamChain(namespace, [{ kind: 'prefill', tokens: prompt.slice(0, 37) }], 16);
    // Shared: the block boundaries inside the common prefill (16, 32); the shorter prompt's own end (37) is not.
    expect(short.links.slice(0, 2).map((l) => l.key)).toEqual(long.links.slice(0, 2).map((l) => l.key));
    expect(long.links.map((l) => l.key)).not.toContain(short.links[2]?.key);
    // The same 49 tokens all prefilled, or with a compression after 40: the state after the 40-token prefill is
    // common to the streams that have it, nothing after it is.
    const allPrefill = await streamChain(namespace, [{ kind: 'prefill', tokens: [...prompt, ...ids(9, 40)] }], 16);
    const compressed = await streamChain(namespace, [{ kind: 'prefill', tokens: prompt }, { kind: 'compress' }, { kind: 'decode', tokens: ids(9, 40) }], 16);
    expect(compressed.links[2]?.key).toBe(long.links[2]?.key);
    const after40 = (c: typeof long): string[] => c.links.filter((l) => l.tokens > 40 || l.segmentsUpTo.at(-1)?.kind === 'compress').map((l) => l.key);
    const sets = [long, allPrefill, compressed].map(after40);
    expect(sets.map((keys) => keys.length)).toEqual([2, 2, 3]);
    expect(new Set(sets.flat()).size).toBe(sets.flat().length);
    // Splitting a prefill into chunks leaves the same state and the same keys.
    const chunked = await streamChain(namespace, [{ kind: 'prefill', tokens: prompt.slice(0, 10) }, { kind: 'prefill', tokens: prompt.slice(10) }, { kind: 'decode', tokens: ids(9, 40) }], 16);
    expect(chunked.links.map((l) => l.key)).toEqual(long.links.map((l) => l.key));
  });

  it('another tenant, setting or block size gives other keys for the same stream', async () => {
    const stream: ContextStream = [{ kind: 'prefill', tokens: ids(32) }];
    const keysOf = async (ns: StoreNamespace, blockSize = 16): Promise<string[]> => (await streamChain(ns, stream, blockSize)).links.map((l) => l.key);
    const base = await keysOf(namespace);
    for (const other of [
      await keysOf({ ...namespace, tenantSalt: 'tenant-b' }),
      await keysOf({ ...namespace, settings: { ...namespace.settings, bits: 8 } }),
      await keysOf(namespace, 8),
    ]) {
      for (const key of other) expect(base).not.toContain(key);
    }
  });
});
