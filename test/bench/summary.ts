import type { BrokerCeiling, GoalResult, Measurement, Observation, RssSample, Stage, SummaryRow, SystemId, WorkloadId } from './model.js';
import { mbPerSecond, median, perSecond, ratio } from './stats.js';

/** Medians of the repetitions, ratios to B1, and the goals: pure functions over a run's measurements. */

const keyOf = (m: Pick<Measurement, 'workload' | 'system' | 'stage'>): string => `${m.workload}|${m.system}|${m.stage}`;

/** One row per (workload, system, stage), in the order first measured; incomplete repetitions are left out. */
export function summarize(measurements: readonly Measurement[]): SummaryRow[] {
  const groups = new Map<string, Measurement[]>();
  for (const m of measurements) {
    const list = groups.get(keyOf(m)) ?? [];
    list.push(m);
    groups.set(keyOf(m), list);
  }
  const rows = [...groups.values()].map(summarizeGroup);
  return rows.map((r) => ({ ...r, ratioToB1: ratio(r.rowsPerSec, b1Rate(rows, r.workload)) }));
}

function summarizeGroup(group: readonly Measurement[]): SummaryRow {
  const first = group[0]!;
  const finished = group.filter((m) => m.complete);
  const used = finished.length > 0 ? finished : group;
  const ms = median(used.map((m) => m.ms));
  const rows = median(used.map((m) => m.rows));
  const bytes = median(used.map((m) => m.bytes));
  return {
    workload: first.workload, system: first.system, stage: first.stage, reps: used.length, complete: finished.length > 0,
    rows, bytes, medianMs: ms, rowsPerSec: perSecond(rows, ms), mbPerSec: mbPerSecond(bytes, ms), ratioToB1: Number.NaN,
  };
}

function b1Rate(rows: readonly SummaryRow[], workload: WorkloadId): number | undefined {
  return rows.find((r) => r.workload === workload && r.system === 'B1' && r.stage === 'copy')?.rowsPerSec;
}

export function find(rows: readonly SummaryRow[], workload: WorkloadId, system: SystemId, stage: Stage): SummaryRow | undefined {
  return rows.find((r) => r.workload === workload && r.system === system && r.stage === stage && r.reps > 0);
}

/** Median of one observation over the repetitions, or undefined when it was not observed. */
export function observed(observations: readonly Observation[], workload: WorkloadId, system: SystemId, name: string): number | undefined {
  const values = observations.filter((o) => o.workload === workload && o.system === system && o.name === name).map((o) => o.value);
  return values.length === 0 ? undefined : median(values);
}

const pct = (x: number): string => `${(x * 100).toFixed(1)} %`;
const MIB = 1024 * 1024;

interface GoalSpec {
  readonly id: string;
  readonly description: string;
  readonly target: string;
  /** The measured value and whether it meets the target; undefined when not measured. */
  readonly evaluate: (s: readonly SummaryRow[], o: readonly Observation[], rss: readonly RssSample[]) => { value: string; met: boolean } | undefined;
  /** The broker's ceiling for this goal, for goals on rows that go through Kafka. */
  readonly ceiling?: (s: readonly SummaryRow[]) => BrokerCeiling | undefined;
}

function ratioGoal(id: string, workload: WorkloadId, stage: Stage, min: number, what: string, options: { ceiling?: boolean } = {}): GoalSpec {
  return {
    id, description: `${workload} ${what} vs B1`, target: `>= ${pct(min)} of B1`,
    evaluate: (s) => {
      const row = find(s, workload, 'highwater', stage);
      const r = row?.ratioToB1;
      if (row === undefined || r === undefined || Number.isNaN(r)) return undefined;
      return { value: `${pct(r)}${row.complete ? '' : ' (incomplete)'}`, met: row.complete && r >= min };
    },
    ...(options.ceiling ? { ceiling: (s: readonly SummaryRow[]) => brokerCeiling(s, workload, stage, min) } : {}),
  };
}

const orNull = (x: number): number | null => (Number.isFinite(x) ? x : null);

/**
 * B2 produce (plain kafkajs) and B2 produce-java (the broker's ceiling), acks=all, highwater's own encoded records
 * or as many of their mean size, on the same broker, against B1 and against highwater's stage on one workload;
 * undefined when neither was measured.
 */
export function brokerCeiling(s: readonly SummaryRow[], workload: WorkloadId, stage: Stage, min: number): BrokerCeiling | undefined {
  const b2 = find(s, workload, 'B2', 'produce');
  const java = find(s, workload, 'B2', 'produce-java');
  if (b2 === undefined && java === undefined) return undefined;
  const hw = find(s, workload, 'highwater', stage);
  const vsB1 = b2 === undefined ? null : orNull(b2.ratioToB1);
  const javaVsB1 = java === undefined ? null : orNull(java.ratioToB1);
  return {
    b2ProduceVsB1: vsB1,
    highwaterVsB2Produce: b2 === undefined ? null : orNull(ratio(hw?.rowsPerSec, b2.rowsPerSec)),
    ...(java === undefined ? {} : { javaProduceVsB1: javaVsB1 }),
    targetAboveCeiling: javaVsB1 !== null && min > javaVsB1,
    targetAboveKafkajs: vsB1 !== null && min > vsB1,
  };
}

export const GOALS: readonly GoalSpec[] = [
  ratioGoal('W1-e2e', 'W1', 'e2e', 0.5, 'end-to-end rows/s', { ceiling: true }),
  ratioGoal('W1-tree-e2e', 'W1-tree', 'e2e', 0.3, 'end-to-end rows/s'),
  ratioGoal('W2-e2e', 'W2', 'e2e', 0.6, 'end-to-end MB/s', { ceiling: true }),
  {
    id: 'W2-storage', description: 'W2 target storage / content size', target: '<= 1.20x',
    evaluate: (_s, o) => {
      const v = observed(o, 'W2', 'highwater', 'storage/content');
      return v === undefined ? undefined : { value: `${v.toFixed(2)}x`, met: v <= 1.2 };
    },
  },
  ratioGoal('W3-apply', 'W3', 'apply', 0.25, 'apply versions/s'),
  ratioGoal('W4-rebuild', 'W4', 'rebuild', 0.5, 'rebuild rows/s'),
  {
    id: 'W2-rss', description: 'W2 peak RSS, largest highwater process', target: '< 512 MiB',
    evaluate: (_s, _o, rss) => {
      const peaks = rss.filter((r) => r.workload === 'W2' && r.system === 'highwater').map((r) => r.peakBytes);
      if (peaks.length === 0) return undefined;
      const peak = Math.max(...peaks);
      return { value: `${(peak / MIB).toFixed(0)} MiB`, met: peak < 512 * MIB };
    },
  },
  {
    id: 'W1-vs-B4', description: 'W1 end-to-end rows/s vs B4 (Debezium)', target: '>= 3.0x B4',
    evaluate: (s) => {
      const hw = find(s, 'W1', 'highwater', 'e2e');
      const b4 = find(s, 'W1', 'B4', 'e2e');
      const r = ratio(hw?.rowsPerSec, b4?.rowsPerSec);
      if (Number.isNaN(r)) return undefined;
      const incomplete = hw?.complete === false || b4?.complete === false;
      return { value: `${r.toFixed(2)}x${incomplete ? ' (incomplete)' : ''}`, met: !incomplete && r >= 3 };
    },
  },
];

export function evaluateGoals(summary: readonly SummaryRow[], observations: readonly Observation[], rss: readonly RssSample[]): GoalResult[] {
  return GOALS.map((g) => {
    const result = g.evaluate(summary, observations, rss);
    const ceiling = g.ceiling?.(summary);
    return {
      id: g.id, description: g.description, target: g.target,
      measured: result?.value ?? '-',
      status: result === undefined ? 'not measured' : result.met ? 'met' : 'missed',
      ...(ceiling === undefined ? {} : { ceiling }),
    };
  });
}
