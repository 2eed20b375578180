import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, ModelFormatError, NonFiniteWeightsError } from '../src/errors.js';
import { CHECKPOINT_HEADER_BYTES, parseCheckpoint } from '../src/model/checkpoint.js';
import { resolveModelFiles } from '../src/node/model-files.js';
import { runCli, SHARED_MODEL, SHARED_TOKENIZER, STACK_LINE } from './cli-helpers.js';

const model = new Uint8Array(readFileSync(SHARED_MODEL));
// stories260K: token embedding [512, 64], rms_att [5, 64], wq [5, 64, 64], ...
const WQ_OFFSET = CHECKPOINT_HEADER_BYTES + 4 * (512 * 64 + 5 * 64);

function withFloat(byteOffset: number, value: number): Uint8Array {
  const copy = model.slice();
  new DataView(copy.buffer).setFloat32(byteOffset, value, true);
  return copy;
}

describe('non-finite checkpoint weights', () => {
  it.each([
    [NaN, CHECKPOINT_HEADER_BYTES + 4 * 100, 'tokenEmbedding', 100],
    [Infinity, WQ_OFFSET + 4 * 7, 'wq', 7],
    [-Infinity, model.length - 4 * ((512 * 8) / 2) * 2 - 4, 'rmsFinalWeight', 63],
  ])('%s is refused on load with a typed error naming the tensor and index', (value, offset, tensor, index) => {
    let error: unknown;
    try {
      parseCheckpoint(withFloat(offset, value));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NonFiniteWeightsError);
    expect(error).toBeInstanceOf(ModelFormatError);
    const e = error as NonFiniteWeightsError;
    expect([e.tensor, e.index, e.value]).toEqual([tensor, index, value]);
    expect(e.message).toContain(`checkpoint tensor ${tensor} holds a non-finite weight (${value}) at index ${index}`);
  });

  it('ignores the unused RoPE tables at the end of the file', () => {
    expect(parseCheckpoint(withFloat(model.length - 4, NaN)).config.dim).toBe(64);
  });

  it('the CLI prints one line and exits 1 instead of generating <unk> garbage', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'kvcompact-cli-')), 'nan.bin');
    writeFileSync(path, withFloat(WQ_OFFSET, NaN));
    const { status, stdout, stderr } = runCli(['generate', '--prompt', 'Lily', '--steps', '2', '--model', path, '--tokenizer', SHARED_TOKENIZER]);
    expect(status).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toMatch(/^kvcompact generate: checkpoint tensor wq holds a non-finite weight \(NaN\) at index 0: /m);
    expect(stderr).not.toMatch(STACK_LINE);
    expect(stderr).not.toContain('<unk>');
  });
});

describe('a directory given as the model', () => {
  it('is reported as a directory with the file expected in it', async () => {
    const dir = join(SHARED_MODEL, '..');
    const attempt = resolveModelFiles({ model: dir, download: false });
    await expect(attempt).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(attempt).rejects.toThrow(`is a directory; pass a llama2.c checkpoint file (.bin), e.g. ${SHARED_MODEL}`);
  });
});
