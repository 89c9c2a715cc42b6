import type { Step, Ticks, Window } from '../contract.js';
import type { HeldBack } from './window.js';

/**
 * What the poller reports as it goes, for metrics and progress bars. Observers are called through `safe`, so a
 * failing observer never breaks a poll.
 */

export interface PollerEvents {
  /**
   * A table's window was planned (or reloaded on resume). `heldBack`: an open transaction pulled its end back.
   * `rowsInWindow`: the rows the window's steps will read, counted at the source (null when not counted).
   */
  windowPlanned: { table: string; scope: string; window: Window; heldBack: HeldBack | null; rowsInWindow: number | null };
  batchPublished: { table: string; step: Step; batchNo: number; rows: number; bytes: number; skipped: number };
  windowCompleted: { table: string; scope: string; windowEnd: Ticks };
  tableFailed: { table: string; scope: string; error: Error };
}

export type PollerListener = { [K in keyof PollerEvents]?: (payload: PollerEvents[K]) => void };

export class PollerObserver {
  constructor(private readonly listeners: readonly PollerListener[] = [], private readonly onObserverError: (err: unknown) => void = () => undefined) {}

  safe<K extends keyof PollerEvents>(event: K, payload: PollerEvents[K]): void {
    for (const l of this.listeners) {
      try {
        l[event]?.(payload);
      } catch (err) {
        this.onObserverError(err);
      }
    }
  }
}
