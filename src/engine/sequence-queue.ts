import { CacheDestroyedError } from '../errors.js';

/** The key of the engine-wide resources one compression uses at a time (its scratch buffers). */
export const COMPRESSOR = -1;

/**
 * Orders a cache's operations per sequence: an operation on some sequences runs after every earlier one on any
 * of them, and operations on other sequences proceed concurrently. When none of its sequences is busy, an
 * operation runs at once (synchronously: its synchronous errors are thrown, not returned), so sequential callers
 * see its effects immediately. A failed operation does not stop the ones after it. After {@link close}, operations not yet started
 * are rejected with the closing error.
 *
 * @example
 * ```ts
 * const queue = new SequenceQueue();
 * const compressed = queue.run([seq, COMPRESSOR], () => compressSequence(stages, seq, options, null));
 * const appended = queue.run([seq], () => append(seq, keys, values)); // starts after the compression
 * ```
 */
export class SequenceQueue {
  readonly #tails = new Map<number, Promise<void>>();
  readonly #busy = new Map<number, number>();
  #closed: Error | null = null;

  /** True while an operation on `id` is queued or running. */
  busy(id: number): boolean {
    return (this.#busy.get(id) ?? 0) > 0;
  }

  /** The error operations are rejected with after {@link close}, or null while open. */
  get closedWith(): Error | null {
    return this.#closed;
  }

  /** Runs `op` after every earlier operation on any of `ids`; its result or error is the promise's. */
  run<T>(ids: readonly number[], op: () => T | Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closed);
    const waits = ids.map((id) => this.#tails.get(id)).filter((tail): tail is Promise<void> => tail !== undefined);
    if (waits.length === 0) {
      // Synchronous errors of an idle run are thrown, as a plain call would throw them.
      const result = op();
      if (!(result instanceof Promise)) return Promise.resolve(result);
      return this.#track(ids, result);
    }
    const started = Promise.all(waits).then(() => {
      if (this.#closed) throw this.#closed;
      return op();
    });
    return this.#track(ids, started);
  }

  #track<T>(ids: readonly number[], work: Promise<T>): Promise<T> {
    for (const id of ids) this.#busy.set(id, (this.#busy.get(id) ?? 0) + 1);
    // The caller's promise settles only after the sequences are marked idle, so code that awaited it may start a
    // model step at once.
    const release = (): void => {
      for (const id of ids) {
        const left = (this.#busy.get(id) ?? 1) - 1;
        if (left > 0) this.#busy.set(id, left);
        else {
          this.#busy.delete(id);
          if (this.#tails.get(id) === tail) this.#tails.delete(id);
        }
      }
    };
    const done = work.then(
      (value) => {
        release();
        return value;
      },
      (error: unknown) => {
        release();
        throw error;
      },
    );
    const tail: Promise<void> = done.then(
      () => undefined,
      () => undefined,
    );
    for (const id of ids) this.#tails.set(id, tail);
    return done;
  }

  /** Rejects every operation that has not started, and every later one, with `error`. */
  close(error: Error = new CacheDestroyedError()): void {
    this.#closed ??= error;
  }
}
