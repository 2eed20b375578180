import { LimitExceededError, InvalidArgumentError } from '../errors.js';

/**
 * Workgroup counts of a dispatch in x, y, z.
 *
 * @example
 * ```ts
 * const [x, y, z]: WorkgroupCount = foldDispatch(70_000, 65_535); // 35000, 2, 1
 * ```
 */
export type WorkgroupCount = readonly [number, number, number];

/**
 * Folds a 1-D count of workgroups into 2-D or 3-D so no dimension exceeds `maxPerDimension`. Shaders recover the
 * linear index with `linear_workgroup_index()` (shaders/common.wgsl) and return when it is past the real count,
 * because folding may launch a few extra workgroups.
 *
 * @example
 * ```ts
 * foldDispatch(70_000, 65_535); // [35000, 2, 1]
 * ```
 */
export function foldDispatch(workgroups: number, maxPerDimension: number): WorkgroupCount {
  if (!Number.isInteger(workgroups) || workgroups <= 0) {
    throw new InvalidArgumentError('workgroups', `a dispatch needs a positive integer count; got ${workgroups}`);
  }
  if (workgroups <= maxPerDimension) return [workgroups, 1, 1];
  const y = Math.ceil(workgroups / maxPerDimension);
  if (y <= maxPerDimension) {
    const x = Math.ceil(workgroups / y);
    return [x, y, 1];
  }
  const z = Math.ceil(y / maxPerDimension);
  if (z > maxPerDimension) {
    throw new LimitExceededError('maxComputeWorkgroupsPerDimension³', workgroups, maxPerDimension ** 3);
  }
  const yFolded = Math.ceil(y / z);
  return [Math.ceil(workgroups / (yFolded * z)), yFolded, z];
}
