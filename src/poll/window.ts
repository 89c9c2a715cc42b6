import type { Ticks, Window } from '../contract.js';

/**
 * Window maths, pure. All inputs come from the source database (its clock, its oldest open transaction) and the
 * control store (the high-watermark); the poller host's clock plays no part.
 *
 *   end   = min(sourceNow − buffer, oldestOpenTransactionStart − 1 tick)
 *   start = highWater − buffer, or the baseline on the first run
 *
 * A transaction still open may commit rows stamped with its start time later; keeping the end before that start
 * means the next window still covers them.
 */

export interface WindowInputs {
  readonly sourceNow: Ticks;
  readonly buffer: Ticks;
  readonly highWater: Ticks | null;
  readonly baseline: Ticks;
  /** Start of the oldest open write transaction, when visible. */
  readonly oldestOpenTransaction: Ticks | null;
}

export interface PlannedWindow {
  readonly window: Window;
  readonly clampedBy: 'oldest-open-transaction' | null;
  /** True when the window holds nothing new: its end is not after its start. */
  readonly empty: boolean;
}

export function planWindow(inputs: WindowInputs): PlannedWindow {
  const start = inputs.highWater === null ? inputs.baseline : inputs.highWater - inputs.buffer;
  let end = inputs.sourceNow - inputs.buffer;
  let clampedBy: PlannedWindow['clampedBy'] = null;
  if (inputs.oldestOpenTransaction !== null && inputs.oldestOpenTransaction - 1n < end) {
    end = inputs.oldestOpenTransaction - 1n;
    clampedBy = 'oldest-open-transaction';
  }
  return { window: { start, end }, clampedBy, empty: end <= start };
}

/** The high-watermark after a completed window: never backwards. */
export function nextHighWater(current: Ticks | null, windowEnd: Ticks): Ticks {
  return current === null || windowEnd > current ? windowEnd : current;
}

export { ancestorPaths, hierarchyDepth } from '../events/hierarchy.js';
