/** The benchmark's vocabulary: what one measurement is, and what a run's results hold. */

export const SYSTEMS = ['highwater', 'B1', 'B2', 'B3', 'B4'] as const;
export type SystemId = (typeof SYSTEMS)[number];

export const WORKLOADS = ['W1', 'W1-tree', 'W2', 'W2-mixed', 'W3', 'W4', 'W5', 'W6'] as const;
export type WorkloadId = (typeof WORKLOADS)[number];

/**
 * A stage of a system: `e2e` is first source read to last target commit; `poll` and `apply` are highwater's stages
 * measured alone; `produce`/`consume` are B2's; `copy` is B1's; `rebuild` is W4.
 */
export type Stage = 'e2e' | 'poll' | 'apply' | 'produce' | 'produce-java' | 'consume' | 'copy' | 'rebuild';

/** One timed repetition of one stage of one system on one workload. */
export interface Measurement {
  readonly workload: WorkloadId;
  readonly system: SystemId;
  readonly stage: Stage;
  readonly rep: number;
  readonly rows: number;
  readonly bytes: number;
  readonly ms: number;
  /** Completed means every row arrived; a timed-out repetition is kept, marked, and left out of medians. */
  readonly complete: boolean;
  readonly note?: string;
}

/** Peak resident memory of one process in one repetition. */
export interface RssSample {
  readonly workload: WorkloadId;
  readonly system: SystemId;
  readonly process: string;
  readonly rep: number;
  readonly peakBytes: number;
}

/** Anything else a workload observed, by name (retries, back-fill requests, storage bytes, latencies…). */
export interface Observation {
  readonly workload: WorkloadId;
  readonly system: SystemId;
  readonly rep: number;
  readonly name: string;
  readonly value: number;
  readonly unit: string;
}

export interface MachineFingerprint {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly loadAverage: readonly [number, number, number];
  readonly loadAverageAfter?: readonly [number, number, number];
  readonly fsyncPerSecond: number;
  readonly node: string;
  readonly postgres: string;
  readonly kafka: string;
}

/** One row of the summary: the median of the complete repetitions of a (workload, system, stage). */
export interface SummaryRow {
  readonly workload: WorkloadId;
  readonly system: SystemId;
  readonly stage: Stage;
  /** Repetitions the medians are taken over: the complete ones, or, when none completed, all of them. */
  readonly reps: number;
  /** False when no repetition completed: the rate is then rows arrived / time until the stage gave up. */
  readonly complete: boolean;
  readonly rows: number;
  readonly bytes: number;
  readonly medianMs: number;
  readonly rowsPerSec: number;
  readonly mbPerSec: number;
  /** Rows/s as a share of B1's copy on the same workload (NaN without B1). */
  readonly ratioToB1: number;
}

export interface GoalResult {
  readonly id: string;
  readonly description: string;
  readonly target: string;
  readonly measured: string;
  readonly status: 'met' | 'missed' | 'not measured';
  /** For a goal on rows that go through Kafka (W1, W2 end to end): the ceiling this broker sets in this run. */
  readonly ceiling?: BrokerCeiling;
}

/**
 * Every row highwater carries goes through Kafka as one record produced with acks=all. Two rates bound it: what the
 * broker takes (B2 produce-java: Kafka's own Java producer, batched, the same number of records of the same mean
 * size) and what plain kafkajs, highwater's client, reaches (B2 produce: one 1000-record send at a time). Shares are
 * of rows/s (the bytes are the same rows', so MB/s shares are equal); null when a side was not measured.
 */
export interface BrokerCeiling {
  /** B2 produce (plain kafkajs) as a share of B1. */
  readonly b2ProduceVsB1: number | null;
  /** highwater's rate for the goal's stage as a share of B2 produce. */
  readonly highwaterVsB2Produce: number | null;
  /** B2 produce-java (the broker's ceiling) as a share of B1; absent from runs before 2026-11-30 14:00. */
  readonly javaProduceVsB1?: number | null;
  /** The goal asks for more than the Java producer reached: it cannot be met on this broker, whatever highwater does. */
  readonly targetAboveCeiling: boolean;
  /** The goal asks for more than plain kafkajs reached (B2 produce); absent from older runs. */
  readonly targetAboveKafkajs?: boolean;
}

export interface BenchResults {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly seed: number;
  readonly command: string;
  readonly sizes: Record<string, number>;
  readonly machine: MachineFingerprint;
  readonly notes: readonly string[];
  readonly measurements: readonly Measurement[];
  readonly rss: readonly RssSample[];
  readonly observations: readonly Observation[];
  readonly summary: readonly SummaryRow[];
  readonly goals: readonly GoalResult[];
}
