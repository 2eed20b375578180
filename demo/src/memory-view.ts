import type { GenerationMemory, HeadBlocks } from '../../src/app/generator.js';

/**
 * Bytes as KiB with one decimal (the demo's caches are small).
 *
 * @example
 * ```ts
 * kib(11571); // '11.3 KiB'
 * ```
 */
export function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

/**
 * How the gauge writes a ratio; the Playwright test compares it with the report's.
 *
 * @example
 * ```ts
 * ratioText(2.2803); // '2.28×'
 * ```
 */
export function ratioText(ratio: number): string {
  return `${ratio.toFixed(2)}×`;
}

/**
 * The memory gauge: the sequence's blocks against an f16 cache of every token, bar and ratio.
 *
 * @example
 * ```ts
 * const gauge = new Gauge(fillEl, ratioEl, detailEl);
 * gauge.update(snapshot.memory);
 * ```
 */
export class Gauge {
  constructor(
    private readonly fill: HTMLElement,
    private readonly ratio: HTMLElement,
    private readonly detail: HTMLElement,
  ) {}

  reset(): void {
    this.fill.style.width = '0';
    this.ratio.textContent = '–';
    this.detail.textContent = 'smaller than a full f16 cache';
  }

  update(memory: GenerationMemory): void {
    const share = memory.bytesFull > 0 ? memory.bytesCompressed / memory.bytesFull : 0;
    this.fill.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
    this.ratio.textContent = ratioText(memory.ratio);
    const smaller = memory.ratio >= 1 ? 'smaller' : 'larger (blocks are allocated whole)';
    this.detail.textContent = `${smaller} than a full f16 cache: ${kib(memory.bytesCompressed)} held for ${memory.tokens} tokens, vs ${kib(memory.bytesFull)}`;
  }

  get text(): string {
    return this.ratio.textContent ?? '';
  }
}

/**
 * The block table of every (layer, KV head) as rows of squares (border = pool, shade = how full) and the pools'
 * occupancy (used vs free blocks).
 *
 * @example
 * ```ts
 * const view = new BlockView(blocksEl, poolEl, 5, 4, 16);
 * view.update(snapshot.blocks, snapshot.memory);
 * ```
 */
export class BlockView {
  private readonly rows: HTMLElement[][] = [];
  private readonly poolCanvas: HTMLCanvasElement;

  constructor(
    container: HTMLElement,
    private readonly pool: HTMLElement,
    layers: number,
    kvHeads: number,
    private readonly blockSize: number,
  ) {
    container.replaceChildren();
    container.style.gridTemplateColumns = `auto repeat(${kvHeads}, minmax(0, 1fr))`;
    container.append(document.createElement('span'));
    for (let h = 0; h < kvHeads; h++) {
      const head = document.createElement('span');
      head.textContent = `head ${h}`;
      container.append(head);
    }
    for (let l = 0; l < layers; l++) {
      const label = document.createElement('span');
      label.textContent = `layer ${l}`;
      container.append(label);
      const row: HTMLElement[] = [];
      for (let h = 0; h < kvHeads; h++) {
        const cell = document.createElement('div');
        cell.className = 'row';
        container.append(cell);
        row.push(cell);
      }
      this.rows.push(row);
    }
    this.poolCanvas = document.createElement('canvas');
    this.pool.replaceChildren();
  }

  update(blocks: readonly (readonly HeadBlocks[])[], memory: GenerationMemory): void {
    blocks.forEach((layer, l) =>
      layer.forEach((head, h) => {
        const cell = this.rows[l]?.[h];
        if (!cell) return;
        const squares: HTMLElement[] = [];
        const total = head.quant + head.full;
        // Quantized blocks come first in a head's list and are always whole; the last block may be partly filled.
        for (let b = 0; b < total; b++) {
          const quant = b < head.quant;
          const filled = Math.min(this.blockSize, head.tokens - b * this.blockSize);
          const square = document.createElement('i');
          square.className = `blk ${quant ? 'quant' : 'full'}`;
          square.style.background = quant ? 'var(--quant)' : 'var(--full)';
          square.style.opacity = String(0.35 + 0.65 * Math.max(0, filled) / this.blockSize);
          squares.push(square);
        }
        const n = document.createElement('span');
        n.className = 'n';
        n.textContent = String(head.tokens);
        cell.replaceChildren(...squares, n);
      }),
    );
    const { full, quant } = memory.pool;
    this.pool.textContent =
      `pools (every sequence, the full-cache run included): f16 ${full.used} used / ${full.free} free blocks of ${full.bytesPerBlock} B` +
      (quant.bytesPerBlock > 0 && quant.used + quant.free > 0 ? `; quantized ${quant.used} used / ${quant.free} free of ${quant.bytesPerBlock} B` : '');
    this.drawPool(full.used, full.free, quant.used, quant.free);
  }

  /** One pixel per block: used f16, free f16, used quantized, free quantized. */
  private drawPool(fullUsed: number, fullFree: number, quantUsed: number, quantFree: number): void {
    const total = fullUsed + fullFree + quantUsed + quantFree;
    if (total === 0) return;
    const canvas = this.poolCanvas;
    canvas.width = total;
    canvas.height = 1;
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    const segments: [number, string][] = [
      [fullUsed, '#2f9e8f'],
      [fullFree, '#c9ece7'],
      [quantUsed, '#7048e8'],
      [quantFree, '#ddd3fb'],
    ];
    let x = 0;
    for (const [n, colour] of segments) {
      ctx.fillStyle = colour;
      ctx.fillRect(x, 0, n, 1);
      x += n;
    }
    this.pool.append(canvas);
  }
}
