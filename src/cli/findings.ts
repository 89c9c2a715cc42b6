import type { HeldBack } from '../poll/window.js';

/**
 * How the poll summary and `status` word what operators must not miss (issue 10, item 6): rows found beyond the
 * safety buffer, rows refused, rows with a NULL ModifiedOn, and a window end held back by an open transaction.
 * Pure, so the wording is tested once and the same in both places.
 */

export interface FindingCounts {
  readonly lateArrivals: number;
  readonly rowsRefused: number;
  readonly nullModifiedOn: number | null;
}

/** "late arrivals 0, refused 0, NULL ModifiedOn 0", with a "!" after each count that needs a look. */
export function findingsText(c: FindingCounts): string {
  const mark = (n: number) => (n > 0 ? `${n}!` : String(n));
  const nulls = c.nullModifiedOn === null ? 'not counted' : mark(c.nullModifiedOn);
  return `late arrivals ${mark(c.lateArrivals)}, refused ${mark(c.rowsRefused)}, NULL ModifiedOn ${nulls}`;
}

/** "window end held back 1h 02m by an open transaction 1h 06m old at the source (an idle-in-transaction session?)". */
export function heldBackText(h: HeldBack): string {
  return `window end held back ${duration(h.heldBackSeconds)} by an open transaction ${duration(h.transactionAgeSeconds)} old at the source: the high-watermark cannot pass its start until it ends (an idle-in-transaction session?)`;
}

/** 75 → "1m 15s", 3725 → "1h 02m", 4 → "4s". Pure. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
