import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mergeEvalReports } from '../src/cli/merge-eval.js';
import type { EvalReport, EvalRow } from '../src/eval/evaluate.js';
import { runCli, STACK_LINE } from './cli-helpers.js';

function row(policy: string, budget: number | null, bits: EvalRow['bits'], ppl: number): EvalRow {
  return {
    policy,
    budgetMode: budget === null ? null : 'uniform',
    budget,
    bits,
    ppl,
    top1: 0.6,
    agreeWithFull: 0.9,
    klToFull: 0.01,
    bytesPerToken: 100,
    ratio: 2,
    ratioAtEnd: 2,
    compressions: 3,
    seconds: 1,
  };
}

const SETTINGS = { window: 512, windows: 8, predictions: 4088, blockSize: 16, sinks: 4, seconds: 10 };
const LEFT: EvalReport = { rows: [row('full', null, 16, 3.65), row('snapkv', 64, 4, 3.9)], settings: SETTINGS };
const RIGHT: EvalReport = {
  rows: [row('full', null, 16, 9.99), row('tova', 64, 4, 4.1)],
  settings: { ...SETTINGS, seconds: 15 },
};

describe('kvcompact merge-eval', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kvcompact-merge-eval-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps every row once (the first report wins a duplicate) and sums the seconds', () => {
    const merged = mergeEvalReports([LEFT, RIGHT]);
    expect(merged.rows.map((r) => `${r.policy} ${r.ppl}`)).toEqual(['full 3.65', 'snapkv 3.9', 'tova 4.1']);
    expect(merged.settings).toEqual({ ...SETTINGS, seconds: 25 });
  });

  it('refuses reports run on other windows', () => {
    const other: EvalReport = { ...RIGHT, settings: { ...RIGHT.settings, windows: 2, predictions: 1022 } };
    expect(() => mergeEvalReports([LEFT, other])).toThrow(/report 2 was run with other settings .*windows 2 vs 8/);
    expect(() => mergeEvalReports([])).toThrow(/nothing to merge/);
  });

  it('prints the merged table and writes the plot; names a file that is not a report', () => {
    const left = join(dir, 'left.json');
    const right = join(dir, 'right.json');
    const plot = join(dir, 'plot.svg');
    writeFileSync(left, JSON.stringify(LEFT));
    writeFileSync(right, JSON.stringify(RIGHT));
    const ok = runCli(['merge-eval', '--reports', `${left},${right}`, '--plot', plot]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^\| tova \| uniform \| 64 \| int4 \| 4\.1000 \|/m);
    expect(ok.stdout).toContain('8 windows × 512 tokens (4088 predictions), block 16, 4 sinks, 25.0 s');
    expect(readFileSync(plot, 'utf8')).toMatch(/^<svg/);

    writeFileSync(join(dir, 'bad.json'), '{"rows": 1}');
    const bad = runCli(['merge-eval', '--reports', `${left},${join(dir, 'bad.json')}`]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--reports: .*bad\.json is not an eval report/);
    expect(bad.stderr).not.toMatch(STACK_LINE);
    expect(runCli(['merge-eval']).stderr).toMatch(/--reports: is required/);
  });
});
