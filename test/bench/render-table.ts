import type { BenchResults, GoalResult, SummaryRow } from './model.js';
import { percentile } from './stats.js';

/** The plain-text report of a run: pure, from the results object. */

const MIB = 1024 * 1024;

function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function pct(n: number): string {
  return Number.isFinite(n) ? `${(n * 100).toFixed(1)} %` : '-';
}

/** Lays out rows of cells in columns; numbers-looking cells are right-aligned. */
export function columns(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (/^[-\d.,% x]+$/.test(c) && i > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function summaryTable(rows: readonly SummaryRow[]): string {
  return columns(
    ['workload', 'system', 'stage', 'reps', 'rows', 'median s', 'rows/s', 'MB/s', 'vs B1'],
    rows.map((r) => [r.workload, r.system, r.complete ? r.stage : `${r.stage} (incomplete*)`, String(r.reps), fmt(r.rows), fmt(r.medianMs / 1000, 2), fmt(r.rowsPerSec), fmt(r.mbPerSec, 1), pct(r.ratioToB1)]),
  ) + (rows.some((r) => !r.complete) ? '\n* no repetition finished in time: rows that arrived / time until the stage gave up' : '');
}

function rssTable(results: BenchResults): string {
  const groups = new Map<string, number[]>();
  for (const r of results.rss) {
    const key = `${r.workload}|${r.system}|${r.process}`;
    groups.set(key, [...(groups.get(key) ?? []), r.peakBytes]);
  }
  const rows = [...groups.entries()].map(([key, peaks]) => [...key.split('|'), fmt(Math.max(...peaks) / MIB), fmt(percentile(peaks, 50) / MIB)]);
  return columns(['workload', 'system', 'process', 'peak RSS MiB (max)', 'median'], rows);
}

function observationTable(results: BenchResults): string {
  const groups = new Map<string, { values: number[]; unit: string }>();
  for (const o of results.observations.filter((x) => parseCpuName(x.name) === null)) {
    const key = `${o.workload}|${o.system}|${o.name}`;
    const g = groups.get(key) ?? { values: [], unit: o.unit };
    g.values.push(o.value);
    groups.set(key, g);
  }
  const rows = [...groups.entries()].map(([key, g]) => [...key.split('|'), fmt(percentile(g.values, 50), 2), g.unit, String(g.values.length)]);
  return columns(['workload', 'system', 'observation', 'median', 'unit', 'reps'], rows);
}

/** `cpu (stage): machine busy` or `cpu/row (stage): <who>` (see systems/cpu-split.ts), else null. */
function parseCpuName(name: string): { stage: string; who: string } | null {
  const m = /^cpu(?:\/row)? \(([^)]+)\): (.+)$/.exec(name);
  return m === null ? null : { stage: m[1]!, who: m[2]! };
}

const PARTIES = ['postgres', 'kafka broker', 'bench process', 'kernel interrupts', 'other processes'];

/**
 * Who spent the CPU of each timed stage (medians over repetitions): how busy the cores were, the µs of CPU per row of
 * every process together and of each party, and the rate the stage's CPU per row allows when every core works on it.
 * Empty for runs before the split was measured.
 */
export function cpuTable(results: BenchResults, cores: number): string {
  const groups = new Map<string, Map<string, number[]>>();
  for (const o of results.observations) {
    const cpu = parseCpuName(o.name);
    if (cpu === null) continue;
    const key = `${o.workload}|${o.system}|${cpu.stage}`;
    const byWho = groups.get(key) ?? new Map<string, number[]>();
    byWho.set(cpu.who, [...(byWho.get(cpu.who) ?? []), o.value]);
    groups.set(key, byWho);
  }
  if (groups.size === 0) return '';
  const rows = [...groups.entries()].map(([key, byWho]) => {
    const med = (who: string): number => (byWho.has(who) ? percentile(byWho.get(who)!, 50) : Number.NaN);
    const own = [...byWho.keys()].filter((w) => w.endsWith(' process') && !PARTIES.includes(w)).map((w) => `${w.replace(/ process$/, '')} ${fmt(med(w))}`);
    const all = med('all processes');
    return [...key.split('|'), `${fmt(med('machine busy'))} %`, fmt(all), fmt(med('postgres')), fmt(med('kafka broker')), own.join(', ') || '-', fmt(med('bench process')), fmt(med('kernel interrupts')), fmt(med('other processes')), fmt((cores * 1e6) / all)];
  });
  return columns(['workload', 'system', 'stage', 'cores busy', 'all µs/row', 'postgres', 'broker', 'highwater processes', 'bench', 'interrupts', 'other', 'rows/s at all cores'], rows);
}

const share = (x: number | null | undefined): string => (x === null || x === undefined ? '-' : pct(x));

/** The goals, with the ceilings next to the goals on rows that go through Kafka (runs before them have none). */
export function goalTable(goals: readonly GoalResult[]): string {
  const withCeiling = goals.some((g) => g.ceiling !== undefined);
  const withJava = goals.some((g) => g.ceiling?.javaProduceVsB1 !== undefined);
  const ceilingHeader = withJava ? ['broker: Java producer', 'kafkajs: B2 produce', 'highwater / B2 produce'] : ['ceiling on this broker', 'highwater / B2 produce'];
  const header = ['goal', 'what', 'target', 'measured', 'status', ...(withCeiling ? ceilingHeader : [])];
  const rows = goals.map((g) => [g.id, g.description, g.target, g.measured, g.status.toUpperCase(), ...(withCeiling ? ceilingCells(g, withJava) : [])]);
  const table = columns(header, rows);
  if (!withCeiling) return table;
  return [table, ...(withJava ? ceilingNotes(goals) : oldCeilingNotes(goals))].join('\n');
}

function ceilingCells(g: GoalResult, withJava: boolean): string[] {
  const c = g.ceiling;
  if (c === undefined) return withJava ? ['', '', ''] : ['', ''];
  const below = (above: boolean | undefined): string => (above === true ? ' (below target)' : '');
  const kafkajs = `${share(c.b2ProduceVsB1)} of B1${below(aboveKafkajs(c))}`;
  if (!withJava) return [kafkajs, share(c.highwaterVsB2Produce)];
  return [c.javaProduceVsB1 === undefined ? '-' : `${share(c.javaProduceVsB1)} of B1${below(c.targetAboveCeiling)}`, kafkajs, share(c.highwaterVsB2Produce)];
}

function ceilingNotes(goals: readonly GoalResult[]): string[] {
  return [
    'ceilings: every highwater row goes through Kafka as one record produced with acks=all. "broker" is Kafka\'s own Java',
    'producer sending as many records of the same mean size, batched (linger 20 ms, 1 MiB batches): what this broker takes.',
    '"kafkajs" is B2 produce, plain kafkajs as a user sends (1000 records a send, one send at a time); highwater\'s client is',
    'kafkajs. Both as shares of B1; the last column is highwater\'s measured figure as a share of B2 produce.',
    ...goals.flatMap((g) => {
      const c = g.ceiling;
      if (c?.targetAboveCeiling === true) return [`${g.id}: the target (${g.target}) is above this broker's ceiling (${share(c.javaProduceVsB1)} of B1): it cannot be met on this broker.`];
      if (c?.targetAboveKafkajs === true) return [`${g.id}: the target (${g.target}) is above plain kafkajs' produce rate here (${share(c.b2ProduceVsB1)} of B1) but not above the broker's (${share(c.javaProduceVsB1)} of B1).`];
      return [];
    }),
  ];
}

/** Whether the target is above plain kafkajs' rate; files before the Java producer said so as targetAboveCeiling. */
const aboveKafkajs = (c: NonNullable<GoalResult['ceiling']>): boolean => c.targetAboveKafkajs ?? c.targetAboveCeiling;

/** Files written before the Java producer was measured: their "ceiling" was plain kafkajs' produce rate. */
function oldCeilingNotes(goals: readonly GoalResult[]): string[] {
  return [
    'ceiling: B2 produce (plain kafkajs, acks=all, the same records) as a share of B1, and highwater\'s figure as a share of it.',
    'This run did not measure the broker with Kafka\'s Java producer, which takes several times what plain kafkajs reaches:',
    'B2 produce is the client\'s rate, not the broker\'s ceiling.',
    ...goals.filter((g) => g.ceiling !== undefined && aboveKafkajs(g.ceiling)).map((g) => `${g.id}: the target (${g.target}) is above B2 produce (${share(g.ceiling!.b2ProduceVsB1)} of B1) in this run.`),
  ];
}

export function machineLine(results: BenchResults): string {
  const m = results.machine;
  const load = (l: readonly number[]): string => l.map((x) => x.toFixed(2)).join(' ');
  return `machine: ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB.toFixed(0)} GiB; load average ${load(m.loadAverage)} at start${m.loadAverageAfter ? `, ${load(m.loadAverageAfter)} at end` : ''}; fsync ${fmt(m.fsyncPerSecond)}/s; node ${m.node}; ${m.postgres}; Kafka ${m.kafka}`;
}

function cpuSection(results: BenchResults): string[] {
  const table = cpuTable(results, results.machine.cores);
  if (table === '') return [];
  return [
    '',
    `CPU of each timed stage (µs of one core per row, medians; ${results.machine.cores} cores shared by every process; "interrupts": the kernel's (mostly the loopback network); "other": what no party of the stage spent)`,
    table,
  ];
}

export function renderReport(results: BenchResults): string {
  return [
    `highwater benchmark — seed ${results.seed}, ${results.startedAt} .. ${results.finishedAt}`,
    machineLine(results),
    `sizes: ${Object.entries(results.sizes).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    '',
    summaryTable(results.summary),
    '',
    'peak RSS per process',
    rssTable(results),
    '',
    'observations',
    observationTable(results),
    ...cpuSection(results),
    '',
    'goals of issue 11',
    goalTable(results.goals),
    ...(results.notes.length > 0 ? ['', 'notes', ...results.notes.map((n) => `- ${n}`)] : []),
  ].join('\n');
}
