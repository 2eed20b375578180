// --chat's prompt building (src/cli/model-flag.ts): the template's rendering, its BOS text dropped (the generator
// prepends the BOS id), and cag's split of a conversation into the knowledge computed once and each question.
import { describe, expect, it } from 'vitest';
import { chatKnowledge, chatPrompt } from '../src/cli/model-flag.js';
import { UsageError } from '../src/errors.js';
import { HfTokenizer } from '../src/model/hf/tokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes } from './model-helpers.js';

const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
/** Writes BOS itself, as Llama 2's and TinyLlama's templates do. */
const TEMPLATE =
  "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";

function tokenizer(template: string | undefined): HfTokenizer {
  return HfTokenizer.fromJson(tokenizerJsonFromLlama2c(tok512), { bos_token: '<s>', eos_token: '</s>', ...(template ? { chat_template: template } : {}) });
}

describe('--chat prompts', () => {
  it("renders the user's turn with the assistant's opened, without the template's own BOS text", () => {
    expect(chatPrompt(tokenizer(TEMPLATE), 'Hi')).toBe('<|user|>Hi\n<|assistant|>');
  });

  it("cag: knowledge + each question's part is the template's whole conversation", () => {
    const t = tokenizer(TEMPLATE);
    const chat = chatKnowledge(t, 'Lily has a dog.');
    expect(chat.knowledge).toBe('<|system|>Lily has a dog.\n');
    const q = chat.question('Who has a dog?');
    expect(q).toBe('<|user|>Who has a dog?\n<|assistant|>');
    expect(`<s>${chat.knowledge}${q}`).toBe(t.applyChatTemplate([{ role: 'system', content: 'Lily has a dog.' }, { role: 'user', content: 'Who has a dog?' }]));
  });

  it('is a usage error on a llama2.c tokenizer, a HF tokenizer without a template, or a template whose prefix moves', () => {
    expect(() => chatPrompt(tok512, 'Hi')).toThrow(UsageError);
    expect(() => chatPrompt(tokenizer(undefined), 'Hi')).toThrow(/chat template/);
    // Renders the system turn differently when it is the last message: the knowledge cannot be computed once.
    const moving = "{% for m in messages %}{{ m['content'] }}{% if loop.last %}.{% endif %}{% endfor %}";
    expect(() => chatKnowledge(tokenizer(moving), 'K').question('Q')).toThrow(/cannot be computed once/);
  });
});
