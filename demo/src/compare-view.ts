import type { GenerationQuality, RunningQuality } from '../../src/app/generator.js';

function span(className: string, text: string): HTMLSpanElement {
  const el = document.createElement('span');
  el.className = className;
  el.textContent = text;
  return el;
}

/**
 * The two texts side by side: the shared part plain, each text's part after the first differing token tinted
 * (compressed orange, full blue) with a bar where they part; and the running agreement line.
 *
 * @example
 * ```ts
 * const view = new CompareView(textEl, fullEl, fullColumn, agreementEl);
 * view.reset(prompt, true);
 * view.update(prompt, snapshot.text, snapshot.quality);
 * ```
 */
export class CompareView {
  constructor(
    private readonly compressed: HTMLElement,
    private readonly full: HTMLElement,
    private readonly fullColumn: HTMLElement,
    private readonly agreement: HTMLElement,
  ) {}

  reset(prompt: string, compare: boolean): void {
    this.fullColumn.hidden = !compare;
    this.fullColumn.parentElement?.classList.toggle('single', !compare);
    this.compressed.replaceChildren(span('prompt', prompt));
    this.full.replaceChildren(span('prompt', prompt));
    this.agreement.textContent = compare ? '' : 'Tick "full cache side by side" to measure what compression costs.';
  }

  update(prompt: string, text: string, quality: RunningQuality | undefined): void {
    if (!quality) {
      this.compressed.replaceChildren(span('prompt', prompt), span('', text));
      this.scroll();
      return;
    }
    const at = quality.divergedAtChar;
    if (at === null) {
      this.compressed.replaceChildren(span('prompt', prompt), span('', text));
      this.full.replaceChildren(span('prompt', prompt), span('', quality.fullText));
    } else {
      this.compressed.replaceChildren(span('prompt', prompt), span('', text.slice(0, at)), span('after c mark', text.slice(at)));
      this.full.replaceChildren(
        span('prompt', prompt),
        span('', quality.fullText.slice(0, at)),
        span('after f mark', quality.fullText.slice(at)),
      );
    }
    const parted =
      quality.divergedAt === null
        ? 'the texts are identical so far'
        : `the texts part at generated token ${quality.divergedAt}`;
    this.agreement.textContent =
      `Top-1 agreement with the full cache on the same context: ${(quality.agreement * 100).toFixed(1)} % ` +
      `(${quality.agreed} of ${quality.compared}) · ${parted}`;
    this.agreement.dataset.agreement = String(quality.agreement);
    this.scroll();
  }

  /** The generated text piece by piece, the pieces speculation drafted and the model accepted marked. */
  updatePieces(prompt: string, pieces: readonly { readonly piece: string; readonly drafted: boolean }[]): void {
    this.compressed.replaceChildren(span('prompt', prompt), ...pieces.map((p) => span(p.drafted ? 'draft' : '', p.piece)));
    this.scroll();
  }

  finish(quality: GenerationQuality): void {
    this.agreement.textContent +=
      ` · perplexity of the story: ${quality.perplexityCompressed.toFixed(3)} compressed vs ${quality.perplexityFull.toFixed(3)} full` +
      ` · mean KL ${quality.meanKl.toFixed(4)} nats`;
  }

  private scroll(): void {
    for (const el of [this.compressed, this.full]) el.scrollTop = el.scrollHeight;
  }
}
