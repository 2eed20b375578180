import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { canonicalJson } from '../src/store/canonical.js';
import { CACHE_FORMAT_VERSION, longestSavedPrefix, namespaceHash, prefixChain, type StoreNamespace } from '../src/store/keys.js';

const namespace: StoreNamespace = {
  modelFingerprint: 'sha256:stories260K',
  settings: {
    policy: 'snapkv',
    budgetMode: 'uniform',
    budget: 64,
    bits: 4,
    sinks: 4,
    recent: 16,
    window: 16,
    decodeSchedule: { mode: 'on-exceed', slack: 16, every: null },
  },
  tenantSalt: 'tenant-a',
};

const tokens = Array.from({ length: 70 }, (_, i) => (i * 7919 + 3) % 32000);

describe('canonicalJson', () => {
  it('sorts keys at every depth and drops undefined fields', () => {
    expect(canonicalJson({ b: 1, a: [true, { d: null, c: 'x' }], u: undefined })).toBe('{"a":[true,{"c":"x","d":null}],"b":1}');
  });
  it('refuses what JSON cannot hold', () => {
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(InvalidArgumentError);
    expect(() => canonicalJson({ a: new Map() })).toThrow(InvalidArgumentError);
    expect(() => canonicalJson([new Uint8Array(2)])).toThrow(InvalidArgumentError);
  });
});

describe('prefixChain', () => {
  it('is H_i = SHA-256(H_{i-1} ‖ block tokens as LE u32), H_0 = SHA-256 of the canonical namespace', async () => {
    const chain = await prefixChain(namespace, tokens, 16);
    const h0 = createHash('sha256')
      .update(
        canonicalJson({
          kind: 'kvcompact-prefix',
          modelFingerprint: namespace.modelFingerprint,
          formatVersion: CACHE_FORMAT_VERSION,
          blockSize: 16,
          settings: namespace.settings,
          tenantSalt: namespace.tenantSalt,
        }),
      )
      .digest();
    expect(chain.namespace).toBe(h0.toString('hex'));
    let previous = h0;
    const expected: string[] = [];
    for (let block = 0; block < 4; block++) {
      const ids = Buffer.alloc(64);
      for (let i = 0; i < 16; i++) ids.writeUInt32LE(tokens[block * 16 + i] as number, 4 * i);
      previous = createHash('sha256').update(previous).update(ids).digest();
      expected.push(previous.toString('hex'));
    }
    expect(chain.keys).toEqual(expected); // 70 tokens: 4 full blocks; the partial fifth has no key
  });

  it('is deterministic and independent of field order', async () => {
    const reordered: StoreNamespace = {
      tenantSalt: namespace.tenantSalt,
      settings: { ...namespace.settings, decodeSchedule: { every: null, slack: 16, mode: 'on-exceed' } },
      modelFingerprint: namespace.modelFingerprint,
    };
    expect(await prefixChain(reordered, tokens, 16)).toEqual(await prefixChain(namespace, tokens, 16));
  });

  it('has the prefix property, and one changed token changes its block key and every later one', async () => {
    const full = await prefixChain(namespace, tokens, 16);
    const prefix = await prefixChain(namespace, tokens.slice(0, 40), 16);
    expect(prefix.keys).toEqual(full.keys.slice(0, 2));
    const changed = [...tokens];
    changed[33] = (changed[33] as number) + 1;
    const other = await prefixChain(namespace, changed, 16);
    expect(other.keys.slice(0, 2)).toEqual(full.keys.slice(0, 2));
    for (let i = 2; i < 4; i++) expect(other.keys[i]).not.toBe(full.keys[i]);
  });

  it('isolates tenants: the same prompt under another salt shares no key', async () => {
    const a = await prefixChain(namespace, tokens, 16);
    const b = await prefixChain({ ...namespace, tenantSalt: 'tenant-b' }, tokens, 16);
    expect(b.namespace).not.toBe(a.namespace);
    for (const key of b.keys) expect(a.keys).not.toContain(key);
  });

  it('gives another H_0 for any change of a setting, the fingerprint, the format version or the block size', async () => {
    const base = await namespaceHash(namespace, 16);
    const s = namespace.settings;
    const variants: StoreNamespace[] = [
      { ...namespace, modelFingerprint: 'sha256:other' },
      { ...namespace, formatVersion: CACHE_FORMAT_VERSION + 1 },
      { ...namespace, settings: { ...s, policy: 'h2o' } },
      { ...namespace, settings: { ...s, budgetMode: 'adakv' } },
      { ...namespace, settings: { ...s, budgetMode: null } },
      { ...namespace, settings: { ...s, budget: 65 } },
      { ...namespace, settings: { ...s, budget: null } },
      { ...namespace, settings: { ...s, bits: 8 } },
      { ...namespace, settings: { ...s, sinks: 3 } },
      { ...namespace, settings: { ...s, recent: 15 } },
      { ...namespace, settings: { ...s, window: 8 } },
      { ...namespace, settings: { ...s, decodeSchedule: { mode: 'every', slack: null, every: 16 } } },
      { ...namespace, settings: { ...s, decodeSchedule: null } },
      { ...namespace, settings: { ...s, extra: { kernelSize: 5 } } },
    ];
    const seen = new Set([Buffer.from(base).toString('hex')]);
    for (const variant of variants) seen.add(Buffer.from(await namespaceHash(variant, 16)).toString('hex'));
    seen.add(Buffer.from(await namespaceHash(namespace, 8)).toString('hex'));
    expect(seen.size).toBe(variants.length + 2);
  });

  it('reveals no token: keys are 64 hex digits', async () => {
    const chain = await prefixChain(namespace, tokens, 16);
    for (const key of chain.keys) expect(key).toMatch(/^[0-9a-f]{64}$/);
  });

  it('refuses bad token ids, block sizes and an empty fingerprint', async () => {
    await expect(prefixChain(namespace, [1, 2, -1, 4], 2)).rejects.toThrow(/tokens\[2\]/);
    await expect(prefixChain(namespace, [1, 2.5], 2)).rejects.toThrow(InvalidArgumentError);
    await expect(prefixChain(namespace, [2 ** 32], 1)).rejects.toThrow(InvalidArgumentError);
    await expect(prefixChain(namespace, [1], 0)).rejects.toThrow(/blockSize/);
    await expect(prefixChain({ ...namespace, modelFingerprint: '' }, [1], 1)).rejects.toThrow(/modelFingerprint/);
  });
});

describe('longestSavedPrefix', () => {
  it('finds the longest saved prefix, not the first', async () => {
    const chain = await prefixChain(namespace, tokens, 16);
    const saved = new Set([chain.keys[0] as string, chain.keys[2] as string]);
    expect(await longestSavedPrefix(chain, (key) => saved.has(key))).toEqual({ key: chain.keys[2], blocks: 3, tokens: 48 });
    expect(await longestSavedPrefix(chain, async (key) => key === chain.keys[0])).toEqual({ key: chain.keys[0], blocks: 1, tokens: 16 });
  });
  it('finds nothing when nothing is saved, or the prompt has no full block', async () => {
    const chain = await prefixChain(namespace, tokens, 16);
    expect(await longestSavedPrefix(chain, () => false)).toBeNull();
    expect(await longestSavedPrefix(await prefixChain(namespace, tokens.slice(0, 15), 16), () => true)).toBeNull();
  });
});
