/**
 * Bytes in binary units with at most 3 significant digits: 1536 → "1.5 KiB", 33554432 → "32 MiB".
 *
 * @example
 * ```ts
 * formatBytes(4 << 20); // "4 MiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? String(value) : trimNumber(value, 3)} ${units[unit] ?? 'B'}`;
}

/**
 * Tokens with a K suffix for powers of 1024: 4096 → "4K", 1000 → "1000".
 *
 * @example
 * ```ts
 * formatTokens(16384); // "16K"
 * ```
 */
export function formatTokens(tokens: number): string {
  return tokens >= 1024 && tokens % 1024 === 0 ? `${tokens / 1024}K` : String(tokens);
}

/**
 * A number with `digits` significant digits and no trailing zeros (no exponent for everyday magnitudes).
 *
 * @example
 * ```ts
 * trimNumber(0.012345, 3); // "0.0123"
 * trimNumber(1234.5, 3);   // "1235" (integers keep every digit)
 * ```
 */
export function trimNumber(value: number, digits: number): string {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return '0';
  if (Math.abs(value) >= 10 ** digits) return String(Math.round(value));
  const text = value.toPrecision(digits);
  return text.includes('e') ? String(Number(text)) : text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}
