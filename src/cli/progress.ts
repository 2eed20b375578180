/**
 * Where progress goes: `process.stderr`, or a fake in tests.
 *
 * @example
 * ```ts
 * const lines: string[] = [];
 * const stream: ProgressStream = { isTTY: false, write: (text) => lines.push(text) };
 * ```
 */
export interface ProgressStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  write(text: string): unknown;
}

/**
 * Progress of a long command. On a terminal a bar is redrawn in place on every update; anywhere else (a file, a
 * pipe, CI logs) updates print nothing and `finish()` prints one summary line.
 *
 * @example
 * ```ts
 * const progress = new ProgressReporter(process.stderr, 'kvcompact eval');
 * progress.update(3, 10, 'snapkv, window 3/8');
 * progress.finish('42 rows');
 * ```
 */
export class ProgressReporter {
  private readonly started = Date.now();
  private last: { done: number; total: number } | null = null;
  private barOpen = false;

  constructor(
    private readonly stream: ProgressStream,
    private readonly what: string,
  ) {}

  update(done: number, total: number, label: string): void {
    this.last = { done, total };
    if (!this.stream.isTTY || total <= 0) return;
    const width = 24;
    const filled = Math.min(width, Math.round((done / total) * width));
    const elapsed = this.seconds();
    const eta = done > 0 ? (elapsed / done) * (total - done) : 0;
    const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} ${elapsed.toFixed(0)}s (eta ${eta.toFixed(0)}s) ${label}`;
    const columns = this.stream.columns || 100;
    this.stream.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}`);
    this.barOpen = true;
  }

  /** Closes the bar on a terminal, or prints the one summary line elsewhere. `detail` says what was done. */
  finish(detail = ''): void {
    if (this.barOpen) this.stream.write('\n');
    this.barOpen = false;
    if (this.stream.isTTY) return;
    const done = detail || (this.last ? `${this.last.done} of ${this.last.total} steps` : 'nothing to do');
    this.stream.write(`${this.what}: ${done} in ${this.seconds().toFixed(1)} s\n`);
  }

  private seconds(): number {
    return (Date.now() - this.started) / 1000;
  }
}
