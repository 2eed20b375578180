import { readFile } from 'node:fs/promises';
import { ResidentStates, type ContextReuse } from '../app/context-reuse.js';
import type { GenerateOptions } from '../app/generator.js';
import type { SpeculativeReport } from '../app/speculative-decoder.js';
import { BUDGET_MODES, type BudgetMode } from '../compress/budgets.js';
import { policyNames } from '../compress/registry.js';
import { UsageError } from '../errors.js';
import type { Bits } from '../format/layout.js';
import { streamTokens } from '../store/context-stream.js';
import { ADAPTER_FLAG, adapterFlag, choiceFlag, type CommandSpec, integerFlag, parseFlags, printUsage } from './flags.js';
import { openGenerator, SPECULATE_FLAGS, speculateFlags } from './generate.js';
import { chatKnowledge, MODEL_FLAGS } from './model-flag.js';
import { GPU_TIER_STATES, splitGpuTier, STORE_FLAGS, storeFromFlags } from './store-flags.js';

const CAG_FLAGS = {
  knowledge: { type: 'string', value: 'FILE', help: 'text every question is about: prefilled (and compressed) once' },
  questions: { type: 'string', value: 'FILE', help: 'one question per line' },
  ...STORE_FLAGS,
  policy: { type: 'string', value: 'P', help: 'eviction policy, or full for no compression (default snapkv)' },
  budget: { type: 'string', value: 'B', help: 'tokens kept per KV head on average (default 64)' },
  bits: { type: 'string', value: '16|8|4|2', help: 'bits of the blocks older than the recent window (default 16)' },
  'budget-mode': { type: 'string', value: 'M', help: `budget split: ${BUDGET_MODES.join(', ')} (default uniform)` },
  steps: { type: 'string', value: 'N', help: 'tokens per answer (default 32)' },
  'no-reuse': { type: 'boolean', help: 'recompute the knowledge for every question (the baseline)' },
  ...SPECULATE_FLAGS,
  ...MODEL_FLAGS,
  chat: { type: 'boolean', help: "HF models: the knowledge as the chat template's system turn, each question a user turn; answers stop at EOS" },
  json: { type: 'boolean', help: 'print { knowledgeTokens, questions, summary } as JSON' },
  adapter: ADAPTER_FLAG,
} as const;

/**
 * `kvcompact cag`: its flags and help.
 *
 * @example
 * ```ts
 * printUsage(CAG_COMMAND);
 * ```
 */
export const CAG_COMMAND: CommandSpec<typeof CAG_FLAGS> = {
  name: 'cag',
  summary: 'cache-augmented generation: questions answered after a knowledge text computed once',
  details:
    'Without --store (or with --store gpu) the compressed knowledge stays on the GPU (a forked sequence per question:\n' +
    'zero copy); with --store memory|dir:PATH it is saved as an entry and restored per question; gpu,dir:PATH keeps\n' +
    'it on the GPU and demotes what does not fit. Answers equal --no-reuse.',
  flags: CAG_FLAGS,
};

function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Speculation over every answer: passes (each answer's first included), drafts, and passes per generated token. */
function speculationTotals(answers: ReadonlyArray<{ readonly tokens: readonly number[]; readonly speculative?: SpeculativeReport }>): {
  forwardPasses: number;
  drafted: number;
  accepted: number;
  passesPerToken: number;
} {
  let forwardPasses = 0;
  let drafted = 0;
  let accepted = 0;
  let tokens = 0;
  for (const answer of answers) {
    forwardPasses += answer.speculative?.forwardPasses ?? 0;
    drafted += answer.speculative?.drafted ?? 0;
    accepted += answer.speculative?.accepted ?? 0;
    tokens += answer.tokens.length;
  }
  return { forwardPasses, drafted, accepted, passesPerToken: tokens > 0 ? forwardPasses / tokens : 0 };
}

/**
 * `kvcompact cag`: answers each question of `--questions` after the knowledge; prints the answers and TTFT, or
 * `{ knowledgeTokens, questions: [{ question, answer, tokens, prefillTokens, ttftMs, milliseconds, hit, speculative? }], summary: {
 * coldTtftMs, warmTtftMs, speedup, bytesStored, speculative?, stats } }` with --json (speculative with --speculate:
 * drafts are looked up in the knowledge and the question too).
 *
 * @example
 * ```ts
 * process.exitCode = await cagCommand(['--knowledge', 'doc.txt', '--questions', 'q.txt', '--budget', '32', '--json']);
 * ```
 */
export async function cagCommand(argv: string[]): Promise<number> {
  const values = parseFlags(CAG_COMMAND, argv);
  if (values === 'help') return printUsage(CAG_COMMAND);
  if (values.knowledge === undefined) throw new UsageError('--knowledge', 'is required: the text the questions are about');
  if (values.questions === undefined) throw new UsageError('--questions', 'is required: a file of one question per line');
  const reuse = values['no-reuse'] !== true;
  if (!reuse && values.store !== undefined) throw new UsageError('--no-reuse', 'recomputes the knowledge for every question: drop --store or --no-reuse');
  const policy = choiceFlag('--policy', values.policy, ['full', ...policyNames()], 'snapkv');
  const options: Omit<GenerateOptions, 'prompt'> = {
    steps: integerFlag('--steps', values.steps, 32, { min: 1 }),
    policy,
    budget: integerFlag('--budget', values.budget, 64, { min: 2 }),
    bits: (policy === 'full' ? 16 : Number(choiceFlag('--bits', values.bits, ['16', '8', '4', '2'], '16'))) as Bits,
    budgetMode: choiceFlag('--budget-mode', values['budget-mode'], BUDGET_MODES, 'uniform') as BudgetMode,
  };
  const speculate = speculateFlags(values);
  adapterFlag(values.adapter);
  const knowledgeText = await readFile(values.knowledge, 'utf8');
  const questions = (await readFile(values.questions, 'utf8')).split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
  if (questions.length === 0) throw new UsageError('--questions', `${values.questions} holds no question (one per line)`);

  // Without --store the states stay on the GPU (the gpu tier alone).
  const spec = reuse ? (values.store ?? 'gpu') : undefined;
  // --chat applies here, to the knowledge and each question, not to openGenerator's single prompt.
  const { generator, modelPath, destroy } = await openGenerator({ ...values, chat: false }, { prompt: '', ...options }, splitGpuTier(spec).gpu ? { residentStates: GPU_TIER_STATES } : {});
  let opened: Awaited<ReturnType<typeof storeFromFlags>> = null;
  try {
    opened = spec === undefined ? null : await storeFromFlags({ ...values, store: spec }, modelPath, generator);
    const store: ContextReuse | null = opened?.store ?? null;
    const residentStore = store instanceof ResidentStates ? store : null;
    // The knowledge is compressed before the first question, so every question starts from the same compressed state.
    const chat = values.chat === true ? chatKnowledge(generator.tokenizer, knowledgeText.trim()) : null;
    const knowledge = generator.contextOf(chat ? chat.knowledge : knowledgeText.trim(), { compress: policy !== 'full' });
    const knowledgeTokens = streamTokens(knowledge);
    const answers = [];
    for (const question of questions) {
      const prompt = chat ? chat.question(question) : question;
      const result = await generator.generate({
        ...options, prompt, continueFrom: knowledge, ...(chat ? { stopAtBos: true } : {}), ...(store ? { store } : {}), ...(speculate ? { speculate } : {}),
      });
      const s = result.report.store;
      answers.push({
        question,
        answer: result.text,
        tokens: result.tokens,
        prefillTokens: s?.prefillTokens ?? knowledgeTokens + result.promptTokens.length,
        ttftMs: result.report.ttftMs ?? result.report.milliseconds,
        milliseconds: result.report.milliseconds,
        hit: s?.hit ?? false,
        ...(result.report.speculative ? { speculative: result.report.speculative } : {}),
      });
      if (!values.json) process.stdout.write(`Q: ${question}\nA:${result.text}\n   (${answers.at(-1)?.hit ? 'hit' : 'miss'}, ${answers.at(-1)?.prefillTokens} tokens prefilled, first token after ${answers.at(-1)?.ttftMs.toFixed(1)} ms)\n\n`);
    }
    const coldTtftMs = median(answers.filter((a) => !a.hit).map((a) => a.ttftMs));
    const warmTtftMs = median(answers.filter((a) => a.hit).map((a) => a.ttftMs));
    const summary = {
      coldTtftMs,
      warmTtftMs,
      speedup: coldTtftMs !== null && warmTtftMs !== null && warmTtftMs > 0 ? coldTtftMs / warmTtftMs : null,
      bytesStored: store ? await store.bytesStored() : 0,
      ...(speculate ? { speculative: speculationTotals(answers) } : {}),
      stats: {
        ...(residentStore ? { gpu: { entries: residentStore.entries(), demotions: residentStore.evictions.demoted } } : {}),
        ...(opened?.entries ? await opened.entries.stats() : {}),
      },
    };
    if (values.json) {
      process.stdout.write(`${JSON.stringify({ knowledgeTokens, questions: answers, summary }, null, 2)}\n`);
    } else {
      const warm = summary.warmTtftMs === null ? 'no hits' : `${summary.warmTtftMs.toFixed(1)} ms warm (${summary.speedup?.toFixed(2)}× faster)`;
      process.stdout.write(`knowledge: ${knowledgeTokens} tokens; first token: ${summary.coldTtftMs?.toFixed(1) ?? '–'} ms cold, ${warm}; ${summary.bytesStored} bytes stored\n`);
      const spec = summary.speculative;
      if (spec) process.stdout.write(`speculation: ${spec.forwardPasses} forward passes (${spec.passesPerToken.toFixed(2)} per token); ${spec.accepted} of ${spec.drafted} drafts accepted\n`);
    }
    return 0;
  } finally {
    await opened?.entries?.close();
    await destroy();
  }
}
