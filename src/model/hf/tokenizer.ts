import { Template } from '@huggingface/jinja';
import { Tokenizer as TokenizersJs } from '@huggingface/tokenizers';
import { HfModelError, InvalidArgumentError } from '../../errors.js';
import type { EncodeOptions, TextTokenizer } from '../tokenizer.js';
import type { HfModelConfig } from './config.js';
import { readFolderText, type ModelFolder } from './loader.js';

/**
 * One message of a chat, as chat templates expect it.
 *
 * @example
 * ```ts
 * const messages: ChatMessage[] = [{ role: 'user', content: 'What is a KV cache?' }];
 * ```
 */
export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant' | (string & {});
  readonly content: string;
}

type Json = Record<string, unknown>;

/**
 * What the tokenizer takes from config.json: BOS/EOS ids and the embedding's row count.
 *
 * @example
 * ```ts
 * HfTokenizer.fromJson(json, tokenizerConfig, { bosTokenId: 1, eosTokenIds: [2], vocabSize: 49152 });
 * ```
 */
export interface HfTokenizerModelInfo {
  readonly bosTokenId: number | undefined;
  readonly eosTokenIds: readonly number[];
  readonly vocabSize?: number;
}

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A special token of tokenizer_config.json: a string or an AddedToken object `{ content }`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isRecord(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

/**
 * A Hugging Face tokenizer (`tokenizer.json`, run by @huggingface/tokenizers) with chat templates from
 * `tokenizer_config.json` (rendered by @huggingface/jinja), behind the same calls as the llama2.c
 * {@link Tokenizer}: `encode(text, { bos })`, `decode(prev, token)`, `decodeAll(ids)`. BOS is added by `encode`
 * only when asked (the tokenizer's own post-processor is not run), so prompts are built the same way for both.
 *
 * @example
 * ```ts
 * const tok = await loadHfTokenizer(folder, model.config);
 * const ids = tok.encode(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }]));
 * ```
 */
export class HfTokenizer implements TextTokenizer {
  /** BOS id (config.json `bos_token_id`, else tokenizer_config.json `bos_token`), or undefined when the model has none. */
  readonly bosId: number | undefined;
  /** Ids that end generation (config.json `eos_token_id`, else tokenizer_config.json `eos_token`). */
  readonly eosIds: readonly number[];
  /** The EOS ids: a HF model's text ends there. */
  get stopIds(): readonly number[] {
    return this.eosIds;
  }
  private readonly chatTemplate: Template | undefined;
  private readonly specialTokens: Record<string, string>;

  /**
   * Rows of the model's embedding: the tokenizer's ids, or config.json's `vocab_size` when the model pads its
   * embedding past them (Qwen2.5: 151,936 rows for 151,665 ids). Ids past the tokenizer decode to nothing.
   */
  readonly vocabSize: number;

  private constructor(
    private readonly tokenizer: TokenizersJs,
    private readonly tokenizerSize: number,
    config: Json,
    model: HfTokenizerModelInfo | undefined,
  ) {
    this.vocabSize = Math.max(tokenizerSize, model?.vocabSize ?? 0);
    const bosText = tokenText(config.bos_token);
    const eosText = tokenText(config.eos_token);
    this.bosId = model?.bosTokenId ?? (bosText !== undefined ? tokenizer.token_to_id(bosText) : undefined);
    const eosFromConfig = eosText !== undefined ? tokenizer.token_to_id(eosText) : undefined;
    this.eosIds = model && model.eosTokenIds.length > 0 ? model.eosTokenIds : eosFromConfig !== undefined ? [eosFromConfig] : [];
    this.specialTokens = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const text = tokenText(config[key]);
      if (text !== undefined) this.specialTokens[key] = text;
    }
    const template = config.chat_template;
    if (typeof template === 'string') {
      try {
        this.chatTemplate = new Template(template);
      } catch (err) {
        throw new HfModelError('tokenizer_config.json', 'chat_template', `does not parse as Jinja (${(err as Error).message})`);
      }
    }
  }

  /**
   * Builds the tokenizer from the parsed `tokenizer.json` and `tokenizer_config.json` (`{}` when the folder has
   * none). `model` supplies BOS/EOS ids from config.json. A tokenizer.json the library cannot build is an
   * {@link HfModelError} naming the file.
   *
   * @example
   * ```ts
   * const tok = HfTokenizer.fromJson(JSON.parse(tokenizerJson), JSON.parse(tokenizerConfig));
   * ```
   */
  static fromJson(tokenizerJson: unknown, tokenizerConfig: unknown = {}, model?: HfTokenizerModelInfo): HfTokenizer {
    if (!isRecord(tokenizerJson)) throw new HfModelError('tokenizer.json', 'json', 'must be a JSON object');
    if (!isRecord(tokenizerJson.model)) throw new HfModelError('tokenizer.json', 'model', 'is missing');
    if (!isRecord(tokenizerConfig)) throw new HfModelError('tokenizer_config.json', 'json', 'must be a JSON object');
    let tokenizer: TokenizersJs;
    try {
      tokenizer = new TokenizersJs(tokenizerJson, tokenizerConfig);
    } catch (err) {
      throw new HfModelError('tokenizer.json', 'model', `cannot be loaded by @huggingface/tokenizers (${(err as Error).message})`);
    }
    // Ids are dense 0..n−1 over the vocabulary and added tokens; the largest id decides the size.
    let maxId = -1;
    for (const id of tokenizer.get_vocab(true).values()) maxId = Math.max(maxId, id);
    return new HfTokenizer(tokenizer, maxId + 1, tokenizerConfig, model);
  }

  /**
   * Token ids of `text` (no special tokens added by the tokenizer itself), with BOS/EOS when asked. A model with no
   * BOS token (neither config.json nor tokenizer_config.json names one) starts a sequence with the text itself, as
   * transformers does; asking for an EOS it lacks is an error.
   *
   * @example
   * ```ts
   * tok.encode('Once upon a time', { bos: true });
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if (options.bos && this.bosId !== undefined) ids.push(this.bosId);
    // Metaspace normalizers prepend "▁" even to an empty string; no text is no tokens.
    if (text.length > 0) for (const id of this.tokenizer.encode(text, { add_special_tokens: false }).ids) ids.push(id);
    if (options.eos) ids.push(this.requireId(this.eosIds[0], 'eos'));
    return ids;
  }

  private requireId(id: number | undefined, what: string): number {
    if (id === undefined) throw new InvalidArgumentError(what, `this tokenizer defines no ${what} token (config.json ${what}_token_id, tokenizer_config.json ${what}_token)`);
    return id;
  }

  /**
   * Text of an id list, special tokens skipped (a leading space after BOS dropped, as the model's decoder does).
   *
   * @example
   * ```ts
   * tok.decodeAll(tok.encode('Hello world', { bos: true })); // 'Hello world'
   * ```
   */
  decodeAll(ids: readonly number[] | Int32Array): string {
    const known = Array.from(ids).filter((id) => id >= 0 && id < this.tokenizerSize);
    return this.tokenizer.decode(known, { skip_special_tokens: true });
  }

  /**
   * Text that `token` adds after `prev` (the decoder's output for [prev, token] past its output for [prev]), for
   * streaming. Like the llama2.c tokenizer's, a token that is part of a UTF-8 character decodes to U+FFFD: use
   * {@link HfTokenizer.decodeAll} for whole texts.
   *
   * @example
   * ```ts
   * process.stdout.write(tok.decode(prev, next));
   * ```
   */
  decode(prev: number, token: number): string {
    if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) {
      throw new InvalidArgumentError('token', `id ${token} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
    const before = prev >= 0 ? this.decodeAll([prev]) : '';
    const both = prev >= 0 ? this.decodeAll([prev, token]) : this.decodeAll([token]);
    return both.startsWith(before) ? both.slice(before.length) : this.decodeAll([token]);
  }

  /**
   * Renders the model's chat template (tokenizer_config.json `chat_template`) for `messages`, ending with the
   * assistant's turn opened when `addGenerationPrompt` (default true). Throws {@link HfModelError} when the
   * model has no template.
   *
   * @example
   * ```ts
   * const prompt = tok.applyChatTemplate([{ role: 'user', content: 'Name three planets.' }]);
   * ```
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: { readonly addGenerationPrompt?: boolean } = {}): string {
    if (!this.chatTemplate) {
      throw new HfModelError('tokenizer_config.json', 'chat_template', 'missing: this model has no chat template; prompt it with plain text');
    }
    return this.chatTemplate.render({
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? true,
      ...this.specialTokens,
    });
  }

  /** Text of the BOS token (tokenizer_config.json `bos_token`), which some chat templates write themselves. */
  get bosToken(): string | undefined {
    return this.specialTokens.bos_token;
  }

  /** True when tokenizer_config.json has a chat template. */
  get hasChatTemplate(): boolean {
    return this.chatTemplate !== undefined;
  }
}

function parseJson(file: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new HfModelError(file, 'json', `is not valid JSON (${(err as Error).message})`);
  }
}

/**
 * Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) of a model folder.
 *
 * @example
 * ```ts
 * const tokenizer = await loadHfTokenizer(folder, (await loadHfModel(folder)).config);
 * ```
 */
export async function loadHfTokenizer(folder: ModelFolder, model?: HfModelConfig): Promise<HfTokenizer> {
  const text = await readFolderText(folder, 'tokenizer.json');
  if (text === undefined) {
    throw new HfModelError(folder.name, 'tokenizer.json', 'missing; download the model\'s tokenizer.json into the folder');
  }
  const configText = await readFolderText(folder, 'tokenizer_config.json');
  const config = configText === undefined ? {} : parseJson('tokenizer_config.json', configText);
  const info = model ? { bosTokenId: model.bosTokenId, eosTokenIds: model.eosTokenIds, vocabSize: model.llama.vocabSize } : undefined;
  return HfTokenizer.fromJson(parseJson('tokenizer.json', text), config, info);
}
