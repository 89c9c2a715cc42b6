import type { Step, Ticks } from '../contract.js';

/**
 * What the poller reports as it goes, for metrics and progress bars. Observers are called through `safe`, so a
 * failing observer never breaks a poll.
 */

export interface PollerEvents {
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
