// The store from the command line: cag with and without reuse, generate --store dir:PATH across two processes,
// and store stats|list|clear. Each runs the built CLI as a user does (npm run build first).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, STACK_LINE } from './cli-helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'kvcompact-cli-store-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first stories of the dev set, 400+ tokens (446 with BOS for tok512) and short enough for a 512-token model. */
function knowledgeFile(): string {
  const paragraphs = readFileSync(new URL('../../shared/data/tinystories_dev.txt', import.meta.url), 'utf8').split('\n').filter((l) => l.trim() !== '');
  const path = join(dir, 'knowledge.txt');
  writeFileSync(path, paragraphs.slice(0, 4).join('\n'));
  return path;
}

interface CagJson {
  knowledgeTokens: number;
  questions: { question: string; answer: string; tokens: number[]; prefillTokens: number; ttftMs: number; hit: boolean }[];
  summary: {
    coldTtftMs: number | null;
    warmTtftMs: number | null;
    speedup: number | null;
    bytesStored: number;
    speculative?: { forwardPasses: number; drafted: number; accepted: number; passesPerToken: number };
    stats: unknown;
  };
}

function cag(args: string[]): CagJson {
  const { status, stdout, stderr } = runCli(['cag', '--json', '--budget', '32', '--bits', '4', '--steps', '8', ...args], {}, 300_000);
  expect(stderr).not.toMatch(STACK_LINE);
  expect(status, stderr).toBe(0);
  return JSON.parse(stdout) as CagJson;
}

describe('kvcompact cag', () => {
  it('answers every question after the compressed knowledge, token-identical with and without reuse', () => {
    const knowledge = knowledgeFile();
    const questions = join(dir, 'questions.txt');
    writeFileSync(questions, 'Who helped Roxy climb the hill?\n\nWhat did Kitty polish?\n');
    const base = ['--knowledge', knowledge, '--questions', questions];
    const baseline = cag([...base, '--no-reuse']);
    expect(baseline.knowledgeTokens).toBeGreaterThanOrEqual(400);
    expect(baseline.questions.map((q) => q.hit)).toEqual([false, false]);
    for (const q of baseline.questions) expect(q.prefillTokens).toBeGreaterThan(baseline.knowledgeTokens);
    expect(baseline.summary).toMatchObject({ warmTtftMs: null, speedup: null, bytesStored: 0 });

    // The last run speculates (fixed draft length: drafts in every pass whatever this machine's timing): same answers.
    for (const store of [[], ['--store', 'memory'], ['--store', `gpu,dir:${join(dir, 'cag-store')}`], ['--speculate', 'ngram', '--fixed-speculative']]) {
      const reused = cag([...base, ...store]);
      expect(reused.knowledgeTokens).toBe(baseline.knowledgeTokens);
      expect(reused.questions.map((q) => q.question)).toEqual(['Who helped Roxy climb the hill?', 'What did Kitty polish?']);
      expect(reused.questions.map((q) => q.tokens), store.join(' ')).toEqual(baseline.questions.map((q) => q.tokens));
      expect(reused.questions.map((q) => q.answer)).toEqual(baseline.questions.map((q) => q.answer));
      expect(reused.questions.map((q) => q.hit)).toEqual([false, true]);
      const [cold, warm] = reused.questions;
      expect(cold?.prefillTokens).toBe(baseline.questions[0]?.prefillTokens);
      // The hit computes the question alone.
      expect(warm?.prefillTokens).toBe((baseline.questions[1]?.prefillTokens ?? 0) - reused.knowledgeTokens);
      const { summary } = reused;
      expect(summary.warmTtftMs).toBe(warm?.ttftMs);
      expect(summary.speedup).toBeCloseTo((summary.coldTtftMs ?? 0) / (summary.warmTtftMs ?? 1), 10);
      expect(summary.bytesStored).toBeGreaterThan(0);
      expect(summary.stats).not.toBeNull();
      if (store.includes('--speculate')) {
        const answered = reused.questions.reduce((sum, q) => sum + q.tokens.length, 0);
        expect(summary.speculative?.drafted).toBeGreaterThan(0);
        expect(summary.speculative?.forwardPasses).toBeLessThanOrEqual(answered);
        expect(summary.speculative?.passesPerToken).toBeCloseTo((summary.speculative?.forwardPasses ?? 0) / answered, 10);
      } else {
        expect(summary.speculative).toBeUndefined();
      }
    }
  }, 900_000);

  it('refuses --store with --no-reuse, and a question file with no question', () => {
    const empty = join(dir, 'empty.txt');
    writeFileSync(empty, '\n\n');
    const a = runCli(['cag', '--knowledge', empty, '--questions', empty, '--no-reuse', '--store', 'memory']);
    expect(a.status).toBe(2);
    expect(a.stderr).toMatch(/--no-reuse: recomputes the knowledge for every question/);
    const b = runCli(['cag', '--knowledge', empty, '--questions', empty]);
    expect(b.status).toBe(2);
    expect(b.stderr).toMatch(/--questions: .* holds no question/);
  });
});

describe('kvcompact generate --store dir:PATH and kvcompact store', () => {
  it('a second process restores the first one\'s state: fewer tokens prefilled, the same tokens', () => {
    const store = `dir:${join(dir, 'store')}`;
    const args = ['generate', '--json', '--prompt', 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park', '--steps', '12', '--policy', 'snapkv', '--budget', '16', '--bits', '4', '--store', store, '--tenant', 'a'];
    const first = runCli(args, {}, 120_000);
    expect(first.status, first.stderr).toBe(0);
    const one = JSON.parse(first.stdout) as { tokens: number[]; report: { store: Record<string, number | boolean> } };
    // The last block boundary inside the prompt (the next run restores it), the prompt's end, the end.
    expect(one.report.store).toMatchObject({ hit: false, hitTokens: 0, saved: 3 });
    expect(one.report.store.prefillTokens).toBe(one.report.store.promptTokens);

    const second = JSON.parse(runCli(args, {}, 120_000).stdout) as typeof one;
    expect(second.tokens).toEqual(one.tokens);
    expect(second.report.store.hit).toBe(true);
    expect(second.report.store.promptTokens).toBe(one.report.store.promptTokens);
    expect(second.report.store.prefillTokens).toBeLessThan(second.report.store.promptTokens as number);
    expect(second.report.store.prefillTokens).toBeGreaterThan(0);

    // Another tenant shares nothing with tenant a.
    const other = JSON.parse(runCli(args.map((a) => (a === 'a' ? 'b' : a)), {}, 120_000).stdout) as typeof one;
    expect(other.report.store.hit).toBe(false);
    expect(other.tokens).toEqual(one.tokens);

    const stats = runCli(['store', 'stats', '--store', store, '--json']);
    expect(stats.status, stats.stderr).toBe(0);
    const { tiers } = JSON.parse(stats.stdout) as { tiers: { name: string; entries: number; bytes: number }[] };
    // Tenants a and b saved three states each (the second run of a saved nothing new).
    expect(tiers).toHaveLength(1);
    expect(tiers[0]?.entries).toBe(6);
    const list = JSON.parse(runCli(['store', 'list', '--store', store, '--json']).stdout) as { entries: { key: string; bytes: number }[] };
    expect(list.entries).toHaveLength(6);
    for (const entry of list.entries) {
      expect(entry.key).toMatch(/^[0-9a-f]{80}$/); // the namespace's 16-character tag, then the 64 of H_i
      expect(entry.bytes).toBeGreaterThan(0);
    }
    expect(list.entries.reduce((n, e) => n + e.bytes, 0)).toBe(tiers[0]?.bytes);
    const cleared = runCli(['store', 'clear', '--store', store, '--json']);
    expect(JSON.parse(cleared.stdout)).toEqual({ deleted: 6 });
    expect(JSON.parse(runCli(['store', 'list', '--store', store, '--json']).stdout)).toEqual({ entries: [] });
  }, 300_000);

  it('store: an unknown action or tier is a usage error', () => {
    const a = runCli(['store', 'compact', '--store', 'memory']);
    expect(a.status).toBe(2);
    expect(a.stderr).toMatch(/unknown action "compact"; use stats, list, clear/);
    const b = runCli(['store', 'stats', '--store', 'tape:/x']);
    expect(b.status).toBe(2);
    expect(b.stderr).toMatch(/--store: unknown tier "tape:\/x"/);
    const d = runCli(['store', 'stats', '--store', 'memory,gpu']);
    expect(d.status).toBe(2);
    const e = runCli(['generate', '--prompt', 'x', '--store', 'memory,gpu']);
    expect(e.status).toBe(2);
    expect(e.stderr).toMatch(/--store: gpu is the front tier: write it first/);
    // A Redis that is not there: whatever it answers, the password never shows (test/cli-store-redis.test.ts runs a real one).
    const c = runCli(['store', 'stats', '--store', 'redis://user:secret@127.0.0.1:1']);
    expect(`${c.stdout}${c.stderr}`).not.toMatch(/secret/);
  });
});
