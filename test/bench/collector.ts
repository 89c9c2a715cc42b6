import type { Measurement, Observation, RssSample, Stage, SystemId, WorkloadId } from './model.js';

/** Collects a run's measurements; prints one line per measurement so a long run shows where it is. */
export class Collector {
  readonly measurements: Measurement[] = [];
  readonly rss: RssSample[] = [];
  readonly observations: Observation[] = [];
  readonly notes: string[] = [];

  constructor(private readonly out: (line: string) => void) {}

  measure(m: Measurement): void {
    this.measurements.push(m);
    const rate = m.ms > 0 ? Math.round((m.rows * 1000) / m.ms) : NaN;
    const mb = m.ms > 0 ? ((m.bytes / m.ms) * 1000) / 1e6 : NaN;
    this.out(`  ${m.workload} rep ${m.rep} ${m.system} ${m.stage}: ${m.rows} rows in ${(m.ms / 1000).toFixed(2)} s = ${rate} rows/s, ${mb.toFixed(1)} MB/s${m.complete ? '' : ' (INCOMPLETE)'}${m.note ? ` — ${m.note}` : ''}`);
  }

  peak(workload: WorkloadId, system: SystemId, process: string, rep: number, peakBytes: number): void {
    if (peakBytes <= 0) return;
    this.rss.push({ workload, system, process, rep, peakBytes });
    this.out(`  ${workload} rep ${rep} ${system} peak RSS of ${process}: ${Math.round(peakBytes / 2 ** 20)} MiB`);
  }

  observe(workload: WorkloadId, system: SystemId, rep: number, name: string, value: number, unit: string): void {
    this.observations.push({ workload, system, rep, name, value, unit });
    this.out(`  ${workload} rep ${rep} ${system} ${name}: ${Number.isInteger(value) ? value : value.toFixed(3)} ${unit}`);
  }

  note(text: string): void {
    if (!this.notes.includes(text)) this.notes.push(text);
    this.out(`  note: ${text}`);
  }
}

export interface Timed {
  readonly workload: WorkloadId;
  readonly system: SystemId;
  readonly stage: Stage;
  readonly rep: number;
}
