import { describe, expect, it } from 'vitest';
import { ProgressReporter, type ProgressStream } from '../src/cli/progress.js';
import { runCli } from './cli-helpers.js';

function fakeStream(isTTY: boolean): ProgressStream & { readonly text: string[] } {
  const text: string[] = [];
  return { isTTY, columns: 60, text, write: (chunk: string) => text.push(chunk) };
}

describe('ProgressReporter', () => {
  it('redraws one bar in place on a terminal and ends it with a newline', () => {
    const stream = fakeStream(true);
    const progress = new ProgressReporter(stream, 'kvcompact eval');
    for (let done = 1; done <= 3; done++) progress.update(done, 3, `window ${done}`);
    progress.finish('3 rows');
    expect(stream.text).toHaveLength(4);
    for (const chunk of stream.text.slice(0, 3)) {
      expect(chunk.startsWith('\r[')).toBe(true);
      expect(chunk).not.toContain('\n');
      expect(chunk.length).toBe(60); // \r + the line padded to columns - 1
    }
    expect(stream.text[2]).toContain('3/3');
    expect(stream.text[3]).toBe('\n');
  });

  it('prints nothing per update and one summary line when the stream is a file or a pipe', () => {
    const stream = fakeStream(false);
    const progress = new ProgressReporter(stream, 'kvcompact bench');
    for (let done = 1; done <= 50; done++) progress.update(done, 50, `case ${done}`);
    expect(stream.text).toEqual([]);
    progress.finish();
    expect(stream.text).toHaveLength(1);
    expect(stream.text[0]).toMatch(/^kvcompact bench: 50 of 50 steps in \d+\.\d s\n$/);
  });
});

describe('kvcompact eval into a pipe', () => {
  it('writes one summary line on stderr, no bar per window', () => {
    const { status, stdout, stderr } = runCli([
      'eval', '--policies', 'full,snapkv', '--budgets', '24', '--bits', '16', '--budget-mode', 'uniform', '--window', '32', '--windows', '2',
    ]);
    expect(status).toBe(0);
    expect(stdout).toMatch(/^\| policy \|/);
    expect(stderr).not.toContain('[#');
    expect(stderr).not.toContain('\r');
    const summaries = stderr.split('\n').filter((line) => line.startsWith('kvcompact eval:'));
    expect(summaries).toHaveLength(1);
    expect(summaries[0]).toMatch(/^kvcompact eval: 2 rows × 2 windows of 32 tokens in \d+\.\d s$/);
  });
});
