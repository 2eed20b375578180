import { basename } from 'node:path';
import type { GenerateResult } from '../app/generator.js';
import { printUsage } from './flags.js';
import { formatGenerationReport, generationCommand, openGenerator, parseGenerationFlags } from './generate.js';

/**
 * What `npm start` shows unless flags say otherwise.
 *
 * @example
 * ```ts
 * await generator.generate({ ...DEMO_DEFAULTS, steps: 32 });
 * ```
 */
export const DEMO_DEFAULTS = {
  prompt: 'Once upon a time, there was a little',
  steps: 200,
  policy: 'snapkv',
  budgetMode: 'adakv',
  budget: 64,
  bits: 4,
  compareWithFull: true,
} as const;

/**
 * `kvcompact demo`: its flags (those of `generate`, with the demo's defaults) and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(DEMO_COMMAND));
 * ```
 */
export const DEMO_COMMAND = generationCommand(
  'demo',
  '(npm start) a story from stories260K with a compressed cache, its memory report and its quality against a full cache',
  DEMO_DEFAULTS,
);

/** Some text before where the two texts part and each one's continuation, or null when they never do. */
function divergence(result: GenerateResult): { compressed: string; full: string } | null {
  const q = result.report.quality;
  if (!q || q.divergedAtChar === null) return null;
  const at = q.divergedAtChar;
  const start = Math.max(0, at - 60);
  const clip = (text: string) => `…${text.slice(start, at)}[${text.slice(at, at + 50)}…]`;
  return { compressed: clip(result.text), full: clip(q.fullText) };
}

/**
 * `kvcompact demo` (`npm start`): finds the default model (--model, KVCOMPACT_MODEL_DIR, ../shared/models, the
 * download cache or a verified download, and says which), streams a story generated with a compressed cache, then
 * prints the memory report (bytes against a full f16 cache, tokens kept per head) and the quality of that setting
 * against a full cache run side by side (top-1 agreement, perplexity of the generated text under both).
 *
 * @example
 * ```ts
 * process.exitCode = await demoCommand(['--steps', '64']);
 * ```
 */
export async function demoCommand(argv: string[]): Promise<number> {
  const parsed = parseGenerationFlags(DEMO_COMMAND, argv, DEMO_DEFAULTS);
  if (parsed === 'help') return printUsage(DEMO_COMMAND);
  const { values } = parsed;
  const { generator, destroy, options, modelPath, format } = await openGenerator(values, parsed.options);
  // With --json, stdout carries the JSON alone; the story still streams, on stderr.
  const out = values.json ? process.stderr : process.stdout;
  const model = format === 'llama2c' ? basename(modelPath).replace(/\.bin$/, '') : `${basename(modelPath)} (Hugging Face)`;
  out.write(`kvcompact demo: text from ${model} whose attention KV cache is compressed on the GPU\n`);
  try {
    out.write(`GPU: ${generator.gpu.adapter.vendor} / ${generator.gpu.adapter.architecture}${generator.gpu.adapter.isFallbackAdapter ? ' (software, SwiftShader: slow but exact)' : ''}\n`);
    const cache =
      options.policy === 'full'
        ? 'full cache (no compression)'
        : `${options.policy} eviction, ${options.budgetMode} budgets, ${options.budget} tokens per KV head, ${options.bits === 16 ? 'f16' : `${options.bits}-bit`} storage`;
    out.write(`cache: ${cache}; ${options.steps} tokens${options.compareWithFull ? ', with a full-cache run side by side' : ''}\n\n`);
    out.write(options.prompt);
    const result = await generator.generate({ ...options, onToken: (_token, piece) => void out.write(piece) });
    if (values.json) {
      out.write('\n');
      process.stdout.write(`${JSON.stringify({ text: result.text, tokens: result.tokens, report: result.report }, null, 2)}\n`);
      return 0;
    }
    out.write(`\n\n${formatGenerationReport(result.report)}`);
    const parted = divergence(result);
    if (parted) {
      out.write(`  where the texts part ([...] = from there on):\n    compressed: ${oneLine(parted.compressed)}\n    full cache: ${oneLine(parted.full)}\n`);
    }
    out.write('\nSee it live in the browser: npm run demo\n');
    return 0;
  } finally {
    await destroy();
  }
}

function oneLine(text: string): string {
  return text.replace(/\n/g, '⏎');
}
