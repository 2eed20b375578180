import { promisify } from 'node:util';
import { InvalidArgumentError } from '../errors.js';
import { parseChoice } from './choice.js';

/**
 * How a Node process waits for Dawn's promises (mapAsync, onSubmittedWorkDone, pipeline creation).
 *
 * - `'spin'`: Dawn's own way. While any of its promises is pending it polls for events on every turn of the event
 *   loop (through the global `setImmediate`), so the waiting thread keeps one core busy. Lowest latency.
 * - `'paced'`: the same polling for the first {@link DAWN_SPIN_MS} of a wait, then once per timer tick (≈ 1 ms): the
 *   core is free for other work. On a software adapter that other work is the GPU's own: SwiftShader runs kernels
 *   on the CPU's cores, which the spinning thread competed for (on 2 cores, `compress()` ran 1.6–1.8× faster paced;
 *   docs/performance.md "Waiting for Dawn without spinning").
 * - `'auto'` (the default): paced on a fallback (software) adapter, spin on a real GPU.
 *
 * @example
 * ```ts
 * const gpu = await createNodeGpu({ polling: 'paced' }); // a service that would rather free the core than save 1 ms
 * ```
 */
export type DawnPolling = 'auto' | 'spin' | 'paced';

/**
 * The polling choices, in the order usage texts list them.
 *
 * @example
 * ```ts
 * DAWN_POLLING_CHOICES.includes(flag as DawnPolling);
 * ```
 */
export const DAWN_POLLING_CHOICES: readonly DawnPolling[] = ['auto', 'spin', 'paced'];

/**
 * Checks a polling choice given as text; `source` names where it came from in the error. Empty or missing means
 * 'auto'.
 *
 * @example
 * ```ts
 * parseDawnPolling(process.env.KVCOMPACT_DAWN_POLLING, 'KVCOMPACT_DAWN_POLLING'); // 'auto' when unset
 * parseDawnPolling('sleep', 'polling'); // throws InvalidArgumentError: polling: must be auto, spin or paced; got "sleep"
 * ```
 */
export function parseDawnPolling(value: string | undefined, source: string): DawnPolling {
  return parseChoice(value, source, DAWN_POLLING_CHOICES, 'auto');
}

/**
 * How long a paced wait polls on every event-loop turn before it polls once per timer tick, in ms: waits shorter
 * than this (a real GPU's readbacks) keep Dawn's latency; longer ones are late by at most one tick.
 */
export const DAWN_SPIN_MS = 1;

/**
 * A pause between two of Dawn's polls longer than this (ms) ends a wait: the next poll starts a new one. Above a
 * timer tick, so a paced wait's own polls never look like a new wait.
 */
const WAIT_GAP_MS = 5;

const NATIVE_ANONYMOUS = 'function () { [native code] }';

/**
 * Whether a `setImmediate` callback is Dawn's event poll: the npm `webgpu` binding schedules an anonymous native
 * function with no parameters, which has a prototype (a JS function prints its source instead; an arrow function
 * has no prototype; a bound one is named "bound …").
 *
 * @example
 * ```ts
 * isDawnPoll(() => {}); // false
 * ```
 */
export function isDawnPoll(callback: unknown): boolean {
  // The cheap tests first: arrow functions (most callbacks) have no own prototype, so their source is never printed.
  return (
    typeof callback === 'function' &&
    callback.name === '' &&
    callback.length === 0 &&
    Object.hasOwn(callback, 'prototype') &&
    Function.prototype.toString.call(callback) === NATIVE_ANONYMOUS
  );
}

/** What {@link pacedSetImmediate} schedules with: the real scheduling functions and a clock (tests pass fakes). */
export interface PollScheduler {
  readonly now: () => number;
  readonly immediate: (callback: () => void) => unknown;
  readonly timer: (callback: () => void) => unknown;
}

/**
 * A `setImmediate` replacement that passes every callback through, except Dawn's polls ({@link isDawnPoll}) once
 * their wait has lasted `spinMs`: those go to the timer instead.
 *
 * @example
 * ```ts
 * const schedule = pacedSetImmediate({ now: () => performance.now(), immediate: setImmediate, timer: (f) => setTimeout(f, 0) }, 1);
 * ```
 */
export function pacedSetImmediate(scheduler: PollScheduler, spinMs: number, isPoll: (callback: unknown) => boolean = isDawnPoll): (callback: () => void) => unknown {
  let waitStart = Number.NEGATIVE_INFINITY;
  let lastPoll = Number.NEGATIVE_INFINITY;
  return (callback) => {
    if (!isPoll(callback)) return scheduler.immediate(callback);
    const now = scheduler.now();
    if (now - lastPoll > WAIT_GAP_MS) waitStart = now;
    lastPoll = now;
    return now - waitStart >= spinMs ? scheduler.timer(callback) : scheduler.immediate(callback);
  };
}

type SetImmediate = typeof globalThis.setImmediate;

// The process's own setImmediate while paced polling is installed: on the global object, so two copies of this
// module in one process (two bundles, a test runner's module graphs) undo each other's wrapper instead of nesting.
const ORIGINAL = Symbol.for('kvcompact.dawnPolling.originalSetImmediate');
const slot = globalThis as unknown as Record<symbol, SetImmediate | undefined>;

/**
 * Sets how this process waits for Dawn ('spin' or 'paced'; see {@link DawnPolling}). Process-wide: the binding
 * looks the global `setImmediate` up for each poll, so pacing wraps it (only Dawn's polls change; other callbacks
 * run as before, and `util.promisify(setImmediate)` still works); 'spin' puts the original back.
 *
 * @example
 * ```ts
 * setDawnPolling('paced'); // every Dawn device in the process
 * ```
 */
export function setDawnPolling(mode: 'spin' | 'paced', spinMs: number = DAWN_SPIN_MS): void {
  if (!Number.isFinite(spinMs) || spinMs < 0) throw new InvalidArgumentError('spinMs', `must be a finite number ≥ 0; got ${spinMs}`);
  const original = slot[ORIGINAL];
  if (original !== undefined) {
    globalThis.setImmediate = original;
    delete slot[ORIGINAL];
  }
  if (mode === 'spin') return;
  // Both taken now, so that timers faked later (a test runner's) cannot stop Dawn's polls.
  const saved = globalThis.setImmediate;
  const timeout = globalThis.setTimeout;
  const paced = pacedSetImmediate(
    { now: () => performance.now(), immediate: (callback) => saved(callback), timer: (callback) => timeout(callback, 0) },
    spinMs,
  );
  const wrapper = function setImmediate(callback: (...args: unknown[]) => void, ...args: unknown[]): unknown {
    return args.length === 0 ? paced(callback) : saved(callback, ...args);
  };
  Object.defineProperty(wrapper, promisify.custom, { value: (saved as unknown as Record<symbol, unknown>)[promisify.custom], configurable: true });
  globalThis.setImmediate = wrapper as unknown as SetImmediate;
  slot[ORIGINAL] = saved;
}

/**
 * Which polling this process has now ('paced' while {@link setDawnPolling} has its wrapper installed).
 *
 * @example
 * ```ts
 * if (dawnPolling() === 'spin') console.error('waits for the GPU keep a core busy');
 * ```
 */
export function dawnPolling(): 'spin' | 'paced' {
  return slot[ORIGINAL] === undefined ? 'spin' : 'paced';
}
