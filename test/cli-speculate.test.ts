import { describe, expect, it } from 'vitest';
import { runCli, STACK_LINE } from './cli-helpers.js';

function expectUsageError(args: string[], message: RegExp): void {
  const { status, stdout, stderr } = runCli(args);
  expect(stderr).toMatch(message);
  expect(status).toBe(2);
  expect(stdout).toBe('');
  expect(stderr).not.toMatch(STACK_LINE);
}

describe('generate --speculate', () => {
  it('checks the speculation flags before any work', () => {
    expectUsageError(['generate', '--prompt', 'x', '--speculate', 'eagle'], /--speculate: must be ngram; got "eagle"/);
    expectUsageError(['generate', '--prompt', 'x', '--num-speculative', '4'], /--num-speculative: tunes --speculate; add --speculate ngram or drop it/);
    expectUsageError(['generate', '--prompt', 'x', '--speculate', 'ngram', '--compare'], /--speculate: --compare decodes a second, full cache/);
    expectUsageError(['generate', '--prompt', 'x', '--speculate', 'ngram', '--lookup-min', '3', '--lookup-max', '2'], /--lookup-max: must be at least --lookup-min \(3\); got 2/);
    expectUsageError(['generate', '--prompt', 'x', '--speculate', 'ngram', '--verify-cost=-1'], /--verify-cost: must be/);
    expectUsageError(['generate', '--prompt', 'x', '--speculate', 'ngram', '--verify-cost', '0', '--fixed-speculative'], /--verify-cost: tunes the adaptive draft length/);
    expectUsageError(['cag', '--knowledge', 'k', '--questions', 'q', '--verify-cost', '0'], /--verify-cost: tunes --speculate/);
  });

  it('reports forward passes, drafts and acceptance, and prints the same greedy text as without', () => {
    const args = ['generate', '--json', '--prompt', 'Tom had a red ball. Tom had a red ball. Tom had a', '--steps', '24', '--policy', 'full'];
    const plain = runCli(args, {}, 120_000);
    const spec = runCli([...args, '--speculate', 'ngram', '--num-speculative', '4', '--fixed-speculative'], {}, 120_000);
    expect(spec.status).toBe(0);
    const a = JSON.parse(plain.stdout) as { tokens: number[] };
    const b = JSON.parse(spec.stdout) as { tokens: number[]; report: { speculative: Record<string, number> } };
    expect(b.tokens).toEqual(a.tokens);
    const s = b.report.speculative;
    expect(Object.keys(s ?? {}).sort()).toEqual(['acceptanceRate', 'accepted', 'drafted', 'forwardPasses', 'tokensPerPass']);
    expect(s?.tokensPerPass).toBeCloseTo(24 / (s?.forwardPasses ?? 1), 10);
    expect(s?.drafted).toBeGreaterThan(0);
  });
});
