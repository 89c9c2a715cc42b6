import type { Ticks, Window } from '../contract.js';
import { TICKS_PER_SECOND } from '../time/ticks.js';

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

/** How far an open transaction pulled the window end back, for status, the poll summary and a metric. */
export interface HeldBack {
  /** Age of the oldest open transaction by the source's clock, in seconds. */
  readonly transactionAgeSeconds: number;
  /** How much earlier the window ends than sourceNow − buffer, in seconds. */
  readonly heldBackSeconds: number;
}

export interface PlannedWindow {
  readonly window: Window;
  readonly clampedBy: 'oldest-open-transaction' | null;
  /** Set when clampedBy is: the transaction's age and what it cost. */
  readonly heldBack: HeldBack | null;
  /** True when the window holds nothing new: its end is not after its start. */
  readonly empty: boolean;
}

export function planWindow(inputs: WindowInputs): PlannedWindow {
  const start = inputs.highWater === null ? inputs.baseline : inputs.highWater - inputs.buffer;
  let end = inputs.sourceNow - inputs.buffer;
  let clampedBy: PlannedWindow['clampedBy'] = null;
  let heldBack: HeldBack | null = null;
  if (inputs.oldestOpenTransaction !== null && inputs.oldestOpenTransaction - 1n < end) {
    heldBack = { transactionAgeSeconds: seconds(inputs.sourceNow - inputs.oldestOpenTransaction), heldBackSeconds: seconds(end - (inputs.oldestOpenTransaction - 1n)) };
    end = inputs.oldestOpenTransaction - 1n;
    clampedBy = 'oldest-open-transaction';
  }
  return { window: { start, end }, clampedBy, heldBack, empty: end <= start };
}

function seconds(ticks: Ticks): number {
  return Number(ticks / TICKS_PER_SECOND) + Number(ticks % TICKS_PER_SECOND) / Number(TICKS_PER_SECOND);
}

/** The high-watermark after a completed window: never backwards. */
export function nextHighWater(current: Ticks | null, windowEnd: Ticks): Ticks {
  return current === null || windowEnd > current ? windowEnd : current;
}

export { ancestorPaths, hierarchyDepth } from '../events/hierarchy.js';
