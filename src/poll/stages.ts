import { monotonicMs } from './elapsed.js';

/**
 * Time spent per stage of a poll (summed milliseconds and calls), for profiling the pipeline: off unless the
 * environment sets HIGHWATER_POLL_STAGES=1, when TablePoll logs the sums at the end of each table. Stages overlap
 * (the pipeline reads and prepares while a send is in flight), so the sums are not shares of the run.
 */
export class StageTimes {
  private readonly sums = new Map<string, { ms: number; calls: number }>();

  constructor(readonly enabled: boolean = process.env.HIGHWATER_POLL_STAGES === '1') {}

  async time<T>(stage: string, work: () => Promise<T>): Promise<T> {
    if (!this.enabled) return work();
    const start = monotonicMs();
    try {
      return await work();
    } finally {
      this.add(stage, monotonicMs() - start);
    }
  }

  add(stage: string, ms: number): void {
    const s = this.sums.get(stage) ?? { ms: 0, calls: 0 };
    s.ms += ms;
    s.calls += 1;
    this.sums.set(stage, s);
  }

  summary(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [stage, s] of [...this.sums].sort((a, b) => b[1].ms - a[1].ms)) out[stage] = `${Math.round(s.ms)} ms / ${s.calls}`;
    return out;
  }
}
