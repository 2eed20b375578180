import { describe, expect, it } from 'vitest';
import { sha256, toHex } from '../src/store/canonical.js';
import { sha256Sync } from '../src/store/sha256.js';
import { streamChain } from '../src/store/context-stream.js';
import { namespaceHash } from '../src/store/keys.js';
import { storeNamespace } from './helpers/store.js';
import { mulberry32 } from '../src/random.js';

describe('sha256Sync', () => {
  it('gives the FIPS 180-4 test vectors', () => {
    const hex = (text: string): string => toHex(sha256Sync(new TextEncoder().encode(text)));
    expect(hex('')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq')).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
  });

  it('equals WebCrypto at every length from 0 to 300 bytes (every padding case) and at random lengths', async () => {
    const random = mulberry32(3);
    const lengths = [...Array.from({ length: 301 }, (_, i) => i), 1000, 4096, 65_537];
    for (const length of lengths) {
      const bytes = Uint8Array.from({ length }, () => Math.floor(random() * 256));
      expect(toHex(sha256Sync(bytes)), `length ${length}`).toBe(toHex(await sha256(bytes)));
    }
  });

  it('keys stream links as H_i = SHA-256(H_(i-1) ‖ kind byte ‖ tokens as u32 LE), checked against WebCrypto', async () => {
    const namespace = storeNamespace();
    const chain = await streamChain(namespace, [{ kind: 'prefill', tokens: [1, 2, 3, 4, 5] }, { kind: 'compress' }], 4);
    let previous = await namespaceHash(namespace, 4);
    const expected: string[] = [];
    for (const [kind, tokens] of [[1, [1, 2, 3, 4]], [1, [5]], [3, []]] as const) {
      const input = new Uint8Array(33 + 4 * tokens.length);
      input.set(previous);
      input[32] = kind;
      tokens.forEach((t, i) => new DataView(input.buffer).setUint32(33 + 4 * i, t, true));
      previous = await sha256(input);
      expected.push(toHex(previous));
    }
    expect(chain.links.map((l) => l.key)).toEqual(expected);
    expect(chain.links.map((l) => l.segmentsUpTo)).toEqual([
      [{ kind: 'prefill', tokens: [1, 2, 3, 4] }],
      [{ kind: 'prefill', tokens: [1, 2, 3, 4, 5] }],
      [{ kind: 'prefill', tokens: [1, 2, 3, 4, 5] }, { kind: 'compress' }],
    ]);
  });
});
