/**
 * The CPU reference of the copy kernel (and its fallback with no adapter).
 *
 * @example
 * ```ts
 * copyReference(new Uint32Array([1, 2, 3])); // Uint32Array [1, 2, 3]
 * ```
 */
export function copyReference(src: Uint32Array, words = src.length): Uint32Array {
  return src.slice(0, words);
}
