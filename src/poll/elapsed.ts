/**
 * Elapsed time in the poller process, measured on the monotonic clock. The wall clock is not a measure of elapsed
 * time: an NTP step, a misset clock corrected or a resumed VM moves it by minutes or hours, and a step back would
 * make "how long since" negative for as long as the step. Window bounds come from the database's clock
 * (window.ts); these are the process's own intervals.
 */

/** Milliseconds on the monotonic clock: only differences mean anything. */
export const monotonicMs = (): number => performance.now();

/**
 * Renewal of a table's lease during a long poll: due every `periodMs` (a third of the lease). On the wall clock a
 * step back postponed it by the size of the step, and the lease expired under a running poll.
 */
export class RenewalTimer {
  private last: number;

  constructor(private readonly periodMs: number, private readonly now: () => number = monotonicMs) {
    this.last = now();
  }

  due(): boolean {
    return this.now() - this.last >= this.periodMs;
  }

  renewed(): void {
    this.last = this.now();
  }
}

/**
 * Ids seen within the last `windowMs` (a back-fill request served moments ago is not served again). On the wall
 * clock a step back kept every id "recent" for as long as the step, and repeated requests were skipped.
 */
export class RecentIds {
  private readonly seen = new Map<string, number>();

  constructor(private readonly windowMs: number, private readonly now: () => number = monotonicMs) {}

  add(id: string): void {
    this.seen.set(id, this.now());
  }

  has(id: string): boolean {
    const now = this.now();
    for (const [key, at] of this.seen) if (now - at >= this.windowMs) this.seen.delete(key);
    return this.seen.has(id);
  }
}
