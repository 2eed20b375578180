// `--model DIR` with stories260K converted into the Hugging Face layout: every model command must give what the
// llama2.c file gives (same ids, same perplexity) and say which format it detected.
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { hfDemoMounts } from '../src/cli/serve-demo.js';
import { runCli, SHARED_MODEL, STACK_LINE } from './cli-helpers.js';
import { hfFolderFiles, tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes } from './model-helpers.js';

/** A template of the ChatML kind (what SmolLM2 ships), enough to show --chat renders it. */
const CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

let root: string;
let hfDir: string;
let knowledge: string;
let questions: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'kvcompact-cli-hf-'));
  hfDir = join(root, 'stories260K-hf');
  mkdirSync(hfDir);
  const llama2c = parseCheckpoint(sharedBytes('models/stories260K.bin'));
  const files = hfFolderFiles({ ...llama2c.config, rmsNormEps: 1e-5, ropeTheta: 10000 }, llama2c.weights, 'F32');
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(hfDir, name), bytes);
  const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
  writeFileSync(join(hfDir, 'tokenizer.json'), JSON.stringify(tokenizerJsonFromLlama2c(tok512)));
  writeFileSync(join(hfDir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: CHAT_TEMPLATE }));
  knowledge = join(root, 'knowledge.txt');
  writeFileSync(knowledge, 'Lily had a red ball. She played with it in the park every day with her dog Max.');
  questions = join(root, 'questions.txt');
  writeFileSync(questions, 'Where did Lily play?\nWho is Max?\n');
});

afterAll(() => {
  rmSync(root, { recursive: true, force: true });
});

function json<T>(stdout: string): T {
  return JSON.parse(stdout) as T;
}

describe('--model DIR: a Hugging Face folder on every model command', () => {
  it('generate: the same greedy ids as the llama2.c file, and each run names its format on stderr', () => {
    const args = ['generate', '--prompt', 'Once upon a time', '--steps', '12', '--policy', 'snapkv', '--budget', '8', '--json'];
    const file = runCli([...args, '--model', SHARED_MODEL], {}, 120_000);
    const dir = runCli([...args, '--model', hfDir], {}, 120_000);
    expect(file.status, file.stderr).toBe(0);
    expect(dir.status, dir.stderr).toBe(0);
    expect(file.stderr).toMatch(/^format: llama2\.c checkpoint$/m);
    expect(dir.stderr).toMatch(/^format: Hugging Face LlamaForCausalLM \(model\.safetensors; 5 layers, 8 heads \/ 4 KV heads of 8, vocab 512, context 512\)$/m);
    expect(dir.stderr).toContain(`model: using the folder ${hfDir} (given explicitly)`);
    const a = json<{ tokens: number[]; text: string; report: { compressions: number } }>(file.stdout);
    const b = json<{ tokens: number[]; text: string; report: { compressions: number } }>(dir.stdout);
    expect(a.tokens).toHaveLength(12);
    expect(a.report.compressions).toBeGreaterThan(0); // the compressed path ran on both
    expect(b.tokens).toEqual(a.tokens);
    expect(b.text).toBe(a.text);
  }, 240_000);

  it('eval: the same perplexity and top-1 rows as the llama2.c file', () => {
    const args = ['eval', '--policies', 'full,snapkv', '--budgets', '32', '--bits', '16', '--budget-mode', 'uniform', '--window', '64', '--windows', '2', '--json'];
    const file = runCli([...args, '--model', SHARED_MODEL], {}, 120_000);
    const dir = runCli([...args, '--model', hfDir], {}, 120_000);
    expect(file.status, file.stderr).toBe(0);
    expect(dir.status, dir.stderr).toBe(0);
    expect(dir.stderr).toMatch(/^format: Hugging Face LlamaForCausalLM/m);
    type Row = { policy: string; ppl: number; top1: number; klToFull: number };
    const a = json<{ rows: Row[] }>(file.stdout).rows;
    const b = json<{ rows: Row[] }>(dir.stdout).rows;
    expect(b.map((r) => r.policy)).toEqual(['full', 'snapkv']);
    for (const [i, row] of b.entries()) {
      const ref = a[i] as Row;
      expect(row.ppl).toBeGreaterThan(1);
      // f32 weights equal after the un-permutation; only summation order could differ.
      expect(Math.abs(row.ppl - ref.ppl)).toBeLessThanOrEqual(1e-6 * ref.ppl);
      expect(row.top1).toBe(ref.top1);
    }
  }, 240_000);

  it('cag: the same answers as the llama2.c file', () => {
    const args = ['cag', '--knowledge', knowledge, '--questions', questions, '--steps', '6', '--budget', '16', '--json'];
    const file = runCli([...args, '--model', SHARED_MODEL], {}, 120_000);
    const dir = runCli([...args, '--model', hfDir], {}, 120_000);
    expect(file.status, file.stderr).toBe(0);
    expect(dir.status, dir.stderr).toBe(0);
    expect(dir.stderr).toMatch(/^format: Hugging Face LlamaForCausalLM/m);
    type Cag = { knowledgeTokens: number; questions: { tokens: number[]; answer: string }[] };
    const a = json<Cag>(file.stdout);
    const b = json<Cag>(dir.stdout);
    expect(a.questions).toHaveLength(2);
    expect(b.knowledgeTokens).toBe(a.knowledgeTokens);
    expect(b.questions.map((q) => q.tokens)).toEqual(a.questions.map((q) => q.tokens));
    expect(b.questions.map((q) => q.answer)).toEqual(a.questions.map((q) => q.answer));
  }, 240_000);

  it('generate --chat renders the chat template (more prompt tokens than the bare prompt); cag --chat runs', () => {
    const bare = runCli(['generate', '--prompt', 'Hi', '--steps', '2', '--policy', 'full', '--json', '--model', hfDir], {}, 120_000);
    const chat = runCli(['generate', '--prompt', 'Hi', '--steps', '2', '--policy', 'full', '--json', '--chat', '--model', hfDir], {}, 120_000);
    expect(bare.status, bare.stderr).toBe(0);
    expect(chat.status, chat.stderr).toBe(0);
    const tokensOf = (r: { stdout: string }) => json<{ report: { promptTokens: number } }>(r.stdout).report.promptTokens;
    // "<|user|>Hi\n<|assistant|>" is many more pieces of tok512 than "Hi".
    expect(tokensOf(chat)).toBeGreaterThan(tokensOf(bare) + 10);
    const cag = runCli(['cag', '--knowledge', knowledge, '--questions', questions, '--steps', '3', '--policy', 'full', '--chat', '--json', '--model', hfDir], {}, 120_000);
    expect(cag.status, cag.stderr).toBe(0);
    expect(json<{ questions: unknown[] }>(cag.stdout).questions).toHaveLength(2);
  }, 240_000);

  it('usage errors: --chat on a model without a template, --tokenizer with a HF folder', () => {
    const noTemplate = runCli(['generate', '--prompt', 'Hi', '--steps', '2', '--chat', '--model', SHARED_MODEL]);
    expect(noTemplate.status).toBe(2);
    expect(noTemplate.stderr).toMatch(/--chat.*chat template/);
    expect(noTemplate.stderr).not.toMatch(STACK_LINE);
    const tokenizer = runCli(['generate', '--prompt', 'Hi', '--steps', '2', '--tokenizer', '/dev/null', '--model', hfDir]);
    expect(tokenizer.status).toBe(2);
    expect(tokenizer.stderr).toMatch(/--tokenizer.*tokenizer\.json/);
    expect(tokenizer.stderr).not.toMatch(STACK_LINE);
  }, 120_000);
});

/** One GET on a fresh connection (no keep-alive reuse racing the server's idle timeout on a loaded machine). */
function get(url: URL): Promise<{ status: number; body: Buffer }> {
  return new Promise((done, fail) => {
    request(url, { agent: false }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => done({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) }));
    })
      .on('error', fail)
      .end();
  });
}

describe('serve-demo --model DIR', () => {
  it('mounts the folder under /hf/ and points the page at it with ?hf=/hf/&context=N', () => {
    expect(hfDemoMounts('/m/SmolLM2', 2048)).toEqual({ mounts: { '/hf/': '/m/SmolLM2' }, query: '?hf=%2Fhf%2F&context=2048' });
  });

  it('serves the HF folder beside the page, context capped at the model\'s (512 here)', async () => {
    const child = spawn(process.execPath, ['dist/cli.js', 'serve-demo', '--port', '0', '--model', hfDir], { cwd: join(import.meta.dirname, '..') });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      const url = await new Promise<string>((done, fail) => {
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const m = /kvcompact demo page: (\S+)/.exec(stdout);
          if (m?.[1]) done(m[1]);
        });
        child.on('exit', (code) => fail(new Error(`serve-demo exited ${code}: ${stderr}`)));
      });
      expect(url).toMatch(/\?hf=%2Fhf%2F&context=512$/);
      expect(stderr).toMatch(/^format: Hugging Face LlamaForCausalLM/m);
      const base = url.slice(0, url.indexOf('?'));
      const config = await get(new URL('hf/config.json', base));
      expect(config.status).toBe(200);
      expect(config.body.toString('utf8')).toBe(readFileSync(join(hfDir, 'config.json'), 'utf8'));
      const weights = await get(new URL('hf/model.safetensors', base));
      expect(weights.body.equals(readFileSync(join(hfDir, 'model.safetensors')))).toBe(true);
      // The page probes optional files: absent ones must be a 404, which the loader reads as "not in the folder".
      expect((await get(new URL('hf/model.safetensors.index.json', base))).status).toBe(404);
    } finally {
      child.kill('SIGTERM');
    }
  }, 60_000);
});

describe('bench --only model --model DIR', () => {
  it('times the HF folder: rows named after it, the format said', () => {
    const run = runCli(['bench', '--only', 'model', '--quick', '--json', '--model', hfDir], {}, 300_000);
    expect(run.stderr).not.toMatch(STACK_LINE);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/format: Hugging Face LlamaForCausalLM/);
    const report = JSON.parse(run.stdout) as { rows: { name: string; ms: number }[] };
    const rows = report.rows.filter((r) => r.name.startsWith('model/'));
    expect(rows.map((r) => r.name)).toEqual(['f32/batch1', 'f32/batch8', 'f16/batch1', 'f16/batch8', 'f16/batch8-per-sequence'].map((c) => `model/stories260K-hf/${c}`));
    for (const row of rows) expect(row.ms, row.name).toBeGreaterThan(0);
  });
});

describe('demo --model DIR', () => {
  it('names the model it runs and gives the llama2.c file\'s tokens', () => {
    const args = ['demo', '--steps', '6', '--policy', 'full', '--json'];
    const dir = runCli([...args, '--model', hfDir], {}, 120_000);
    expect(dir.status, dir.stderr).toBe(0);
    expect(dir.stderr).toMatch(/kvcompact demo: text from stories260K-hf \(Hugging Face\)/);
    const file = runCli([...args, '--model', SHARED_MODEL], {}, 120_000);
    expect(file.stderr).toMatch(/kvcompact demo: text from stories260K whose/);
    expect((JSON.parse(dir.stdout) as { tokens: number[] }).tokens).toEqual((JSON.parse(file.stdout) as { tokens: number[] }).tokens);
  });
});
