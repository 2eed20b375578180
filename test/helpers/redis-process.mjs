// One process of the cross-process reuse test: `save URL KEY` writes a deterministic entry through the built
// Node entry and flushes; `load URL KEY` reads it back in a fresh process. Both print JSON on stdout.
import { createHash } from 'node:crypto';
import { decodeStoreEntry, encodeStoreEntry } from '../../dist/node.js';
import { openRedisTier } from '../../dist/node.js';

const [mode, url, key] = process.argv.slice(2);
const tier = await openRedisTier(url, { waitMs: 3000 });
const sha = (bytes) => createHash('sha256').update(bytes).digest('hex');
if (mode === 'save') {
  const blocks = new Uint8Array(4096).map((_, i) => (i * 31 + 7) & 0xff);
  const bytes = await encodeStoreEntry({
    layoutVersion: 1, shape: { layers: 2, kvHeads: 1, headDim: 8, blockSize: 16 }, settings: { bits: 8 },
    fingerprint: 'cross-process', tokenCount: 32, sections: new Map([['blocks', blocks]]),
  });
  const queued = await tier.put(key, bytes);
  await tier.flush();
  const stats = await tier.stats();
  console.log(JSON.stringify({ queued, written: stats.writes.written, sha: sha(bytes), length: bytes.length }));
} else {
  const bytes = await tier.get(key);
  const entry = bytes === null ? null : await decodeStoreEntry(bytes, { fingerprint: 'cross-process' });
  console.log(JSON.stringify({ hit: bytes !== null, sha: bytes === null ? null : sha(bytes), length: bytes?.length ?? 0, tokenCount: entry?.tokenCount ?? null }));
}
await tier.close();
