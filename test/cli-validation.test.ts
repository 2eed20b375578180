// Every flag and path is checked before any work starts: these runs must fail in well under a second of work,
// with one line on stderr naming the flag, status 2, and nothing on stdout.
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, SHARED_MODEL, STACK_LINE } from './cli-helpers.js';

function expectUsageError(args: string[], message: RegExp, env: Record<string, string | undefined> = {}): string {
  const { status, stdout, stderr } = runCli(args, env);
  expect(stderr).toMatch(message);
  expect(status).toBe(2);
  expect(stdout).toBe('');
  expect(stderr).not.toMatch(STACK_LINE);
  // No row ran and no adapter was opened.
  expect(stderr).not.toMatch(/rows on the|adapter .*: /);
  return stderr;
}

describe('eval checks its flags before the sweep', () => {
  it('refuses --plot into a directory that does not exist', () => {
    expectUsageError(['eval', '--plot', '/nonexistent/x.svg'], /^kvcompact eval: --plot: directory \/nonexistent does not exist/m);
  });

  it('refuses --plot naming a directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kvcompact-cli-'));
    const plot = join(dir, 'a.svg');
    mkdirSync(plot);
    expectUsageError(['eval', '--plot', plot], /--plot: .*a\.svg is a directory/);
  });

  it("refuses a --window past the model's context (seq_len 512 for stories260K)", () => {
    expectUsageError(['eval', '--window', '100000'], /--window: 100000 tokens is past the model's context of 512 tokens .*pass --window 512 or less/);
  });

  it('refuses budgets that leave nothing to evict, and budgets with only the full policy', () => {
    expectUsageError(['eval', '--window', '64', '--budgets', '32,64'], /--budgets: 64 not below --window 64/);
    expectUsageError(['eval', '--policies', 'full', '--budgets', '32'], /--budgets: means nothing with --policies full/);
  });

  it('refuses --adapter with the cpu engine, and unknown engines, policies, bits and modes', () => {
    expectUsageError(['eval', '--adapter', 'software'], /--adapter: applies to --engine gpu only/);
    expectUsageError(['eval', '--engine', 'tpu'], /--engine: must be cpu or gpu; got "tpu"/);
    expectUsageError(['eval', '--policies', 'full,lru'], /--policies: unknown lru; known: full, snapkv/);
    expectUsageError(['eval', '--bits', '3'], /--bits: must be among 32, 16, 8, 4, 2; got 3/);
    expectUsageError(['eval', '--budget-mode', 'fair'], /--budget-mode: unknown fair; known: uniform, adakv, pyramid, global/);
    expectUsageError(['eval', '--text', '/nonexistent.txt'], /--text: \/nonexistent.txt does not exist/);
  });
});

describe('the adapter choice is checked', () => {
  it('refuses --adapter bogus on every GPU command', () => {
    expectUsageError(['info', '--adapter', 'bogus'], /^kvcompact info: --adapter: must be auto, hardware or software; got "bogus"$/m);
    expectUsageError(['bench', '--adapter', 'gpu'], /--adapter: must be auto, hardware or software; got "gpu"/);
    expectUsageError(['generate', '--prompt', 'x', '--adapter', 'cuda'], /--adapter: must be auto, hardware or software/);
    expectUsageError(['eval', '--engine', 'gpu', '--adapter', 'x'], /--adapter: must be auto, hardware or software/);
  });

  it('refuses a bad KVCOMPACT_ADAPTER, naming the variable', () => {
    expectUsageError(['info'], /^kvcompact info: KVCOMPACT_ADAPTER: must be auto, hardware or software; got "bogus"$/m, { KVCOMPACT_ADAPTER: 'bogus' });
  });
});

describe('generate and demo refuse flags that mean nothing with --policy full', () => {
  it.each([
    [['generate', '--prompt', 'x', '--policy', 'full', '--bits', '4'], '--bits'],
    [['generate', '--prompt', 'x', '--policy', 'full', '--budget', '16'], '--budget'],
    [['demo', '--policy', 'full', '--budget-mode', 'adakv'], '--budget-mode'],
    [['demo', '--policy', 'full', '--bits', '2'], '--bits'],
  ])('%j', (args, flag) => {
    expectUsageError(args, new RegExp(`${flag}: means nothing with --policy full.*drop ${flag} or pick an eviction policy \\(snapkv`));
  });

  it('refuses an unknown policy and steps past the context, before opening a GPU', () => {
    expectUsageError(['generate', '--prompt', 'x', '--policy', 'lru'], /--policy: must be full, snapkv, .* or \w+; got "lru"/);
    expectUsageError(['generate', '--prompt', 'Once', '--steps', '600'], /--steps: the prompt \(\d+ tokens with BOS\) plus 600 steps is past the model's context of 512 tokens; pass --steps \d+ or less/);
  });
});

describe('model paths', () => {
  it('says a directory given as --model is a directory, and which file to pass', () => {
    const stderr = expectUsageError(['generate', '--prompt', 'x', '--model', dirname(SHARED_MODEL)], /model: .*models is a directory; pass a llama2.c checkpoint file/);
    expect(stderr).toContain(`e.g. ${SHARED_MODEL}`);
    expectUsageError(['eval', '--tokenizer', tmpdir()], /tokenizer: .* is a directory; pass a llama2.c tokenizer file \(\.bin\), such as tok512\.bin/);
  });

  it('still says a missing file does not exist', () => {
    expectUsageError(['eval', '--model', '/nonexistent/m.bin'], /model: file \/nonexistent\/m\.bin does not exist/);
  });
});
