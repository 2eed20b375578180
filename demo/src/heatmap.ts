import type { HeatSnapshot } from '../../src/app/heat.js';

/** Viridis at five stops: perceptually even, readable for colour-blind viewers. */
const STOPS: readonly (readonly [number, number, number])[] = [
  [0x44, 0x01, 0x54],
  [0x3b, 0x52, 0x8b],
  [0x21, 0x91, 0x8c],
  [0x5e, 0xc9, 0x62],
  [0xfd, 0xe7, 0x25],
];
const EVICTED: readonly [number, number, number] = [0xd4, 0xd8, 0xdf];

/**
 * Colour of v in [0, 1] on the viridis ramp, as [r, g, b] in 0..255.
 *
 * @example
 * ```ts
 * ramp(1); // [253, 231, 37]
 * ```
 */
export function ramp(v: number): [number, number, number] {
  const x = Math.min(1, Math.max(0, v)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(x));
  const f = x - i;
  const a = STOPS[i] ?? EVICTED;
  const b = STOPS[i + 1] ?? EVICTED;
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

interface Panel {
  readonly canvas: HTMLCanvasElement;
  readonly ctx: CanvasRenderingContext2D;
  readonly kept: HTMLElement;
}

/**
 * One canvas per (layer, KV head): column = token position, row = decode step. Each step paints one row: kept
 * tokens coloured by the mean attention they received (normalised per row, square root so the tail shows next to
 * the attention sinks), evicted tokens grey, positions not yet generated left blank.
 *
 * @example
 * ```ts
 * const grid = new HeatGrid(container, 5, 4, promptTokens + steps - 1, steps);
 * grid.drawRow(step, snapshot.heat);
 * ```
 */
export class HeatGrid {
  private readonly panels: Panel[][] = [];

  constructor(
    container: HTMLElement,
    layers: number,
    kvHeads: number,
    private readonly columns: number,
    private readonly rows: number,
  ) {
    container.replaceChildren();
    container.style.gridTemplateColumns = `16px repeat(${kvHeads}, minmax(0, 1fr))`;
    for (let l = 0; l < layers; l++) {
      const layerLabel = document.createElement('div');
      layerLabel.className = 'layer-label';
      layerLabel.textContent = `layer ${l}`;
      container.append(layerLabel);
      const row: Panel[] = [];
      for (let h = 0; h < kvHeads; h++) {
        const panel = document.createElement('div');
        panel.className = 'panel';
        const label = document.createElement('div');
        label.className = 'label';
        const name = document.createElement('span');
        name.textContent = `L${l} · KV head ${h}`;
        const kept = document.createElement('span');
        label.append(name, kept);
        const canvas = document.createElement('canvas');
        canvas.width = columns;
        canvas.height = rows;
        canvas.dataset.layer = String(l);
        canvas.dataset.head = String(h);
        canvas.title = `layer ${l}, KV head ${h}: positions 0…${columns - 1} across, steps down`;
        const ctx = canvas.getContext('2d');
        if (!ctx) throw new Error('no 2D canvas context');
        panel.append(label, canvas);
        container.append(panel);
        row.push({ canvas, ctx, kept });
      }
      this.panels.push(row);
    }
  }

  /** Paints row `step` from a heat snapshot. */
  drawRow(step: number, heat: HeatSnapshot): void {
    if (step >= this.rows) return;
    const width = Math.min(this.columns, heat.seqLen);
    heat.heads.forEach((layer, l) =>
      layer.forEach((head, h) => {
        const panel = this.panels[l]?.[h];
        if (!panel || width === 0) return;
        let max = 0;
        for (const s of head.scores) max = Math.max(max, s);
        const image = panel.ctx.createImageData(width, 1);
        const px = image.data;
        for (let x = 0; x < width; x++) {
          px[4 * x] = EVICTED[0];
          px[4 * x + 1] = EVICTED[1];
          px[4 * x + 2] = EVICTED[2];
          px[4 * x + 3] = 255;
        }
        head.positions.forEach((pos, i) => {
          if (pos >= width) return;
          const v = max > 0 ? Math.sqrt((head.scores[i] ?? 0) / max) : 0;
          const [r, g, b] = ramp(v);
          px[4 * pos] = r;
          px[4 * pos + 1] = g;
          px[4 * pos + 2] = b;
        });
        panel.ctx.putImageData(image, 0, step);
        panel.kept.textContent = `${head.positions.length} kept`;
      }),
    );
  }

  /** Kept counts without heat (heat maps off). */
  setKept(keptPerHead: readonly (readonly number[])[]): void {
    keptPerHead.forEach((layer, l) =>
      layer.forEach((n, h) => {
        const panel = this.panels[l]?.[h];
        if (panel) panel.kept.textContent = `${n} kept`;
      }),
    );
  }
}
