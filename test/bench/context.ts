import type { Kafka } from 'kafkajs';
import type pg from 'pg';
import type { Collector } from './collector.js';
import type { HwEnv } from './systems/highwater.js';
import type { BenchOptions } from './options.js';
import type { CpuSampler } from './env/cpu.js';

/** What every workload gets: the databases, the broker, the collector and the options. */
export interface BenchContext {
  readonly options: BenchOptions;
  readonly env: HwEnv;
  readonly source: pg.Pool;
  readonly target: pg.Pool;
  readonly kafka: Kafka;
  readonly collect: Collector;
  /** Who spent the CPU during each timed stage (null where /proc cannot be read). */
  readonly cpu: CpuSampler | null;
  readonly log: (line: string) => void;
  /** Registers a clean-up that runs once at the end of the run, last registered first. */
  readonly defer: (cleanup: () => Promise<void>) => void;
}

/**
 * Generous limit for one stage to finish: 120 s, or rows at `minRowsPerSec`, or content at 0.5 MB/s, whichever is
 * longest. A stage past it is recorded as incomplete, not as a failure of the run.
 */
export function stageTimeoutMs(rows: number, minRowsPerSec = 100, bytes = 0): number {
  return Math.max(120_000, (rows / minRowsPerSec) * 1000, bytes / 500);
}
