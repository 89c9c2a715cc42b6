/**
 * Liveness of the long-running loops, for /healthz: each loop declares how long it may go without progress, and
 * beats when it makes some. A loop past its limit is stale: /healthz answers 503 naming it, so an orchestrator
 * restarts a process whose poll loop hangs (a stuck query, a lost connection never timed out) instead of
 * trusting a process that merely still answers HTTP.
 */
export class Liveness {
  private readonly loops = new Map<string, { limitMs: number; lastBeat: number }>();

  /** `now` is a monotonic clock in milliseconds: a step of the wall clock must neither fake a hang nor hide one. */
  constructor(private readonly now: () => number = () => performance.now()) {}

  expect(loop: string, limitMs: number): void {
    this.loops.set(loop, { limitMs, lastBeat: this.now() });
  }

  beat(loop: string): void {
    const entry = this.loops.get(loop);
    if (entry) entry.lastBeat = this.now();
  }

  forget(loop: string): void {
    this.loops.delete(loop);
  }

  /** Loops past their limit, with the seconds since their last progress. */
  stale(): { loop: string; silentSeconds: number; limitSeconds: number }[] {
    const at = this.now();
    return [...this.loops].filter(([, e]) => at - e.lastBeat > e.limitMs)
      .map(([loop, e]) => ({ loop, silentSeconds: Math.round((at - e.lastBeat) / 1000), limitSeconds: Math.round(e.limitMs / 1000) }));
  }

  names(): string[] {
    return [...this.loops.keys()];
  }
}
