import type { TextTokenizer } from '../model/tokenizer.js';
import { HfTokenizer, type ChatMessage } from '../model/hf/tokenizer.js';
import { UsageError } from '../errors.js';
import { loadNodeModel, type NodeModel } from '../node/hf-model-files.js';
import type { FlagTable } from './flags.js';
import { ProgressReporter } from './progress.js';

/**
 * `--model` and `--tokenizer`, the same on every command that loads a model.
 *
 * @example
 * ```ts
 * const FLAGS = { ...MODEL_FLAGS, json: { type: 'boolean', help: 'JSON output' } } as const satisfies FlagTable;
 * ```
 */
export const MODEL_FLAGS = {
  model: {
    type: 'string',
    value: 'DIR|FILE|hf:ORG/NAME',
    help: 'a Hugging Face model folder, a llama2.c checkpoint, or a Hub model to download (default: stories260K, found or downloaded)',
  },
  tokenizer: { type: 'string', value: 'FILE', help: 'a llama2.c checkpoint\'s tokenizer (default: tok512.bin beside it; HF models use their tokenizer.json)' },
} as const satisfies FlagTable;

/**
 * Loads `--model` whatever its format through loadNodeModel, with a download bar for `hf:` models, and says on
 * stderr which format it detected and where the files came from.
 *
 * @example
 * ```ts
 * const model = await loadCliModel(values); // stderr: "format: Hugging Face LlamaForCausalLM (...)"
 * ```
 */
export async function loadCliModel(values: { readonly model?: string | undefined; readonly tokenizer?: string | undefined }): Promise<NodeModel> {
  const progress = new ProgressReporter(process.stderr, 'kvcompact download');
  let downloading = false;
  const model = await loadNodeModel({
    ...(values.model !== undefined ? { model: values.model } : {}),
    ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
    onBytes: (file, received, total) => {
      downloading = true;
      progress.update(received, Math.max(total, 1), file);
    },
  });
  if (downloading) progress.finish();
  if (model.format !== 'llama2c' && values.tokenizer !== undefined) {
    throw new UsageError('--tokenizer', `is for llama2.c checkpoints; ${model.modelPath} is a Hugging Face model that uses its tokenizer.json: drop --tokenizer`);
  }
  process.stderr.write(`${model.message}\n`);
  return model;
}

/** `--chat` needs a HF tokenizer with a chat template. */
function chatTokenizer(tokenizer: TextTokenizer): HfTokenizer {
  if (!(tokenizer instanceof HfTokenizer) || !tokenizer.hasChatTemplate) {
    throw new UsageError('--chat', 'needs a model with a chat template (tokenizer_config.json chat_template): drop --chat and prompt with plain text');
  }
  return tokenizer;
}

/** The generator encodes BOS itself: a template that writes the BOS token's text would give two. */
function withoutBos(tokenizer: HfTokenizer, text: string): string {
  const bos = tokenizer.bosToken;
  return bos !== undefined && bos !== '' && text.startsWith(bos) ? text.slice(bos.length) : text;
}

/**
 * `--chat`: the prompt as the user's turn of the model's chat template, the assistant's turn opened.
 *
 * @example
 * ```ts
 * const prompt = chatPrompt(tokenizer, 'What is a KV cache?');
 * ```
 */
export function chatPrompt(tokenizer: TextTokenizer, user: string): string {
  const t = chatTokenizer(tokenizer);
  return withoutBos(t, t.applyChatTemplate([{ role: 'user', content: user }]));
}

/**
 * `cag --chat`: the knowledge as the system turn (computed once) and, per question, the text the template adds
 * after it for the user's turn and the assistant's opening, so that knowledge + question is exactly the template's
 * rendering of the conversation.
 *
 * @example
 * ```ts
 * const chat = chatKnowledge(tokenizer, knowledge);
 * generator.contextOf(chat.knowledge); chat.question('Who is Lily?');
 * ```
 */
export function chatKnowledge(tokenizer: TextTokenizer, knowledge: string): { knowledge: string; question: (q: string) => string } {
  const t = chatTokenizer(tokenizer);
  const system: ChatMessage = { role: 'system', content: knowledge };
  const prefix = withoutBos(t, t.applyChatTemplate([system], { addGenerationPrompt: false }));
  return {
    knowledge: prefix,
    question: (q) => {
      const whole = withoutBos(t, t.applyChatTemplate([system, { role: 'user', content: q }]));
      if (!whole.startsWith(prefix)) {
        throw new UsageError('--chat', 'this chat template renders the system turn differently once a question follows, so the knowledge cannot be computed once: drop --chat');
      }
      return whole.slice(prefix.length);
    },
  };
}
