import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, StoreEntryError, type StoreEntryReason } from '../src/errors.js';
import { mulberry32 } from '../src/random.js';
import { decodeStoreEntry, encodeStoreEntry, STORE_ENTRY_VERSION, type StoreEntry } from '../src/store/entry-format.js';

const shape = { layers: 5, kvHeads: 4, headDim: 8, blockSize: 16 };
const settings = { policy: 'snapkv', budget: 64, bits: 4, schedule: { mode: 'on-exceed', slack: 16 } };
const fingerprint = 'sha256:stories260K';

function entry(): StoreEntry {
  const random = mulberry32(7);
  const blocks = Uint8Array.from({ length: 1001 }, () => Math.floor(random() * 256));
  return {
    layoutVersion: 1,
    shape,
    settings,
    fingerprint,
    tokenCount: 96,
    sections: new Map([
      ['lengths', Uint8Array.from([1, 2, 3])],
      ['empty', new Uint8Array(0)],
      ['blocks', blocks],
    ]),
  };
}

async function reasonOf(bytes: Uint8Array, expect = {}): Promise<StoreEntryReason | 'accepted'> {
  try {
    await decodeStoreEntry(bytes, expect);
    return 'accepted';
  } catch (err) {
    if (err instanceof StoreEntryError) return err.reason;
    throw err; // a crash: the test fails on it
  }
}

/** An entry with `header` as its header text and a payload of `payloadBytes` zero bytes, checksum made valid. */
function craft(header: string, payloadBytes: number, options: { headerLength?: number } = {}): Uint8Array {
  const text = new TextEncoder().encode(header);
  const payloadStart = Math.ceil((24 + text.length) / 8) * 8;
  const total = payloadStart + payloadBytes + 32;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode('KVCSTORE'), 0);
  view.setUint32(8, STORE_ENTRY_VERSION, true);
  view.setUint32(12, options.headerLength ?? text.length, true);
  view.setBigUint64(16, BigInt(total), true);
  out.set(text, 24);
  return reseal(out);
}

function reseal(bytes: Uint8Array): Uint8Array {
  bytes.set(createHash('sha256').update(bytes.subarray(0, bytes.length - 32)).digest(), bytes.length - 32);
  return bytes;
}

const header = (fields: Record<string, unknown>): string =>
  JSON.stringify({ layoutVersion: 1, shape, settings, fingerprint, tokenCount: 96, sections: [{ name: 'a', offset: 0, length: 8 }], ...fields });

describe('the store entry format', () => {
  it('round-trips every field and section, in order', async () => {
    const original = entry();
    const bytes = await encodeStoreEntry(original);
    const decoded = await decodeStoreEntry(bytes, { layoutVersion: 1, fingerprint, shape: { ...shape }, settings, tokenCount: 96, sections: ['blocks'] });
    expect([...decoded.sections.keys()]).toEqual(['lengths', 'empty', 'blocks']);
    expect(decoded).toEqual(original);
    bytes.fill(0); // the decoded sections are copies
    expect(decoded.sections.get('blocks')).toEqual(original.sections.get('blocks'));
  });

  it('round-trips an entry without sections, and reads a view inside a larger buffer', async () => {
    const bytes = await encodeStoreEntry({ ...entry(), sections: new Map() });
    const padded = new Uint8Array(bytes.length + 13);
    padded.set(bytes, 5);
    expect((await decodeStoreEntry(padded.subarray(5, 5 + bytes.length))).sections.size).toBe(0);
  });

  it('refuses bad entries on write with InvalidArgumentError', async () => {
    await expect(encodeStoreEntry({ ...entry(), tokenCount: -1 })).rejects.toThrow(InvalidArgumentError);
    await expect(encodeStoreEntry({ ...entry(), shape: { layers: 1.5 } })).rejects.toThrow(InvalidArgumentError);
    await expect(encodeStoreEntry({ ...entry(), fingerprint: '' })).rejects.toThrow(InvalidArgumentError);
    await expect(encodeStoreEntry({ ...entry(), settings: { x: Number.NaN } })).rejects.toThrow(InvalidArgumentError);
    await expect(encodeStoreEntry({ ...entry(), sections: new Map([['', new Uint8Array(1)]]) })).rejects.toThrow(InvalidArgumentError);
  });

  it('names the reason of each refusal', async () => {
    const bytes = await encodeStoreEntry(entry());
    const edit = (at: number, value: number): Uint8Array => {
      const copy = bytes.slice();
      copy[at] = value;
      return copy;
    };
    expect(await reasonOf(bytes.subarray(0, 40))).toBe('length');
    expect(await reasonOf(bytes.subarray(0, bytes.length - 1))).toBe('length');
    expect(await reasonOf(new Uint8Array([...bytes, 0]))).toBe('length');
    expect(await reasonOf(edit(0, 0x6b))).toBe('magic');
    expect(await reasonOf(edit(8, STORE_ENTRY_VERSION + 1))).toBe('version');
    expect(await reasonOf(edit(30, (bytes[30] as number) ^ 1))).toBe('checksum');
    expect(await reasonOf(edit(bytes.length - 1, (bytes.at(-1) as number) ^ 0x80))).toBe('checksum');
    expect(await reasonOf(bytes, { layoutVersion: 2 })).toBe('layout');
    expect(await reasonOf(bytes, { fingerprint: 'sha256:other' })).toBe('fingerprint');
    expect(await reasonOf(bytes, { shape: { ...shape, kvHeads: 2 } })).toBe('shape');
    expect(await reasonOf(bytes, { shape: { ...shape, extra: 0 } })).toBe('shape');
    expect(await reasonOf(bytes, { settings: { ...settings, bits: 8 } })).toBe('settings');
    expect(await reasonOf(bytes, { tokenCount: 80 })).toBe('tokens');
    expect(await reasonOf(bytes, { sections: ['scores'] })).toBe('section');
    expect(await reasonOf(bytes, { settings: { schedule: { slack: 16, mode: 'on-exceed' }, bits: 4, budget: 64, policy: 'snapkv' } })).toBe('accepted');
  });

  it('refuses malformed headers and section tables even under a valid checksum', async () => {
    expect(await reasonOf(craft(header({}), 8))).toBe('accepted');
    expect(await reasonOf(craft('{"layoutVersion":', 8))).toBe('header');
    expect(await reasonOf(craft('[1,2]', 8))).toBe('header');
    expect(await reasonOf(craft(header({}), 8, { headerLength: 1 << 30 }))).toBe('header');
    expect(await reasonOf(craft(header({ tokenCount: -3 }), 8))).toBe('header');
    expect(await reasonOf(craft(header({ shape: { layers: 'five' } }), 8))).toBe('header');
    expect(await reasonOf(craft(header({ fingerprint: 7 }), 8))).toBe('header');
    expect(await reasonOf(craft(header({ sections: {} }), 8))).toBe('header');
    expect(await reasonOf(craft(header({ sections: [null] }), 8))).toBe('header');
    expect(await reasonOf(craft(header({ sections: [{ name: 'a', offset: -8, length: 8 }] }), 8))).toBe('header');
    expect(await reasonOf(craft(header({}).replace('"bits":4', '"bits":1e999'), 8))).toBe('header');
    const { settings: _dropped, ...noSettings } = JSON.parse(header({})) as Record<string, unknown>;
    expect(await reasonOf(craft(JSON.stringify(noSettings), 8))).toBe('header');
    expect(await reasonOf(craft(header({ sections: [{ name: 'a', offset: 0, length: 9 }] }), 8))).toBe('section');
    expect(await reasonOf(craft(header({ sections: [{ name: 'a', offset: 0, length: 4 }] }), 8))).toBe('section');
    expect(await reasonOf(craft(header({ sections: [{ name: 'a', offset: 8, length: 8 }] }), 16))).toBe('section');
    const overlapping = [
      { name: 'a', offset: 0, length: 8 },
      { name: 'b', offset: 4, length: 4 },
    ];
    expect(await reasonOf(craft(header({ sections: overlapping }), 8))).toBe('section');
    const twice = [
      { name: 'a', offset: 0, length: 8 },
      { name: 'a', offset: 8, length: 8 },
    ];
    expect(await reasonOf(craft(header({ sections: twice }), 16))).toBe('section');
  });

  it('fuzz: 1,000 truncated or bit-flipped encodings → 1,000 typed refusals, none accepted', async () => {
    const bytes = await encodeStoreEntry(entry());
    const random = mulberry32(12);
    const counts = new Map<StoreEntryReason | 'accepted', number>();
    for (let trial = 0; trial < 1000; trial++) {
      let mutated: Uint8Array;
      if (trial % 2 === 0) {
        mutated = bytes.slice(0, Math.floor(random() * bytes.length));
      } else {
        mutated = bytes.slice();
        const flips = 1 + Math.floor(random() * 4);
        for (let f = 0; f < flips; f++) {
          const at = Math.floor(random() * bytes.length);
          mutated[at] = (mutated[at] as number) ^ (1 << Math.floor(random() * 8));
        }
        if (mutated.every((byte, i) => byte === bytes[i])) mutated[0] = (mutated[0] as number) ^ 1; // flips that cancelled out
      }
      const reason = await reasonOf(mutated);
      counts.set(reason, (counts.get(reason) ?? 0) + 1);
    }
    expect(counts.get('accepted')).toBeUndefined();
    expect([...counts.values()].reduce((a, b) => a + b, 0)).toBe(1000);
    expect(counts.get('length')).toBeGreaterThanOrEqual(500); // every truncation
    expect(counts.get('checksum')).toBeGreaterThan(300);
  });

  it('fuzz: bit flips in the header under a re-made checksum never crash the reader', async () => {
    const bytes = await encodeStoreEntry(entry());
    const headerLength = new DataView(bytes.buffer).getUint32(12, true);
    const random = mulberry32(99);
    let refused = 0;
    for (let trial = 0; trial < 300; trial++) {
      const mutated = bytes.slice();
      const at = 12 + Math.floor(random() * (headerLength + 12)); // header length field, total, header text
      mutated[at] = (mutated[at] as number) ^ (1 << Math.floor(random() * 8));
      if ((await reasonOf(reseal(mutated))) !== 'accepted') refused++;
    }
    expect(refused).toBeGreaterThan(200); // the rest changed a value into another valid one (a digit, a letter)
  });
});
