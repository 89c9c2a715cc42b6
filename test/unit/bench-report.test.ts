import { describe, expect, it } from 'vitest';
import type { BenchResults, Measurement } from '../bench/model.js';
import { parseOnly, parseOptions, scaled, DEFAULT_SIZES, FULL_SIZES } from '../bench/options.js';
import { cpuTable, goalTable, renderReport, summaryTable } from '../bench/render-table.js';
import { renderSvg, xOfRatio } from '../bench/render-svg.js';
import { evaluateGoals, summarize } from '../bench/summary.js';

const m = (over: Partial<Measurement>): Measurement => ({ workload: 'W1', system: 'highwater', stage: 'e2e', rep: 1, rows: 1000, bytes: 200_000, ms: 1000, complete: true, ...over });

const measurements: Measurement[] = [
  m({ system: 'B1', stage: 'copy', ms: 10 }), m({ system: 'B1', stage: 'copy', ms: 20, rep: 2 }), m({ system: 'B1', stage: 'copy', ms: 30, rep: 3 }),
  m({ ms: 100 }), m({ ms: 40, rep: 2 }), m({ ms: 60, rep: 3 }), m({ ms: 1, rep: 4, complete: false }),
  m({ system: 'B4', ms: 1000 }),
  m({ system: 'B2', stage: 'produce', ms: 50 }),
  m({ workload: 'W2', system: 'B1', stage: 'copy', ms: 100 }), m({ workload: 'W2', ms: 125 }),
  m({ workload: 'W2', system: 'B2', stage: 'produce', ms: 110 }),
];

function results(): BenchResults {
  const summary = summarize(measurements);
  return {
    startedAt: '2026-01-01T00:00:00Z', finishedAt: '2026-01-01T00:10:00Z', seed: 7, command: 'npm run bench', sizes: { w1Rows: 1000 },
    machine: { cores: 2, cpuModel: 'cpu', memoryGiB: 24, loadAverage: [1, 2, 3], fsyncPerSecond: 900, node: 'v20', postgres: 'PostgreSQL 15', kafka: '3.9.1' },
    notes: ['a note'], measurements, rss: [{ workload: 'W2', system: 'highwater', process: 'consume', rep: 1, peakBytes: 600 * 2 ** 20 }],
    observations: [{ workload: 'W2', system: 'highwater', rep: 1, name: 'storage/content', value: 1.1, unit: 'x' }],
    summary, goals: evaluateGoals(summary, [{ workload: 'W2', system: 'highwater', rep: 1, name: 'storage/content', value: 1.1, unit: 'x' }], [{ workload: 'W2', system: 'highwater', process: 'consume', rep: 1, peakBytes: 600 * 2 ** 20 }]),
  };
}

describe('bench summary and goals', () => {
  it('takes medians of complete repetitions and ratios to B1 of the same workload', () => {
    const hw = summarize(measurements).find((r) => r.workload === 'W1' && r.system === 'highwater')!;
    expect(hw.reps).toBe(3);
    expect(hw.medianMs).toBe(60);
    expect(hw.ratioToB1).toBeCloseTo(20 / 60);
    const b1 = summarize(measurements).find((r) => r.workload === 'W1' && r.system === 'B1')!;
    expect(b1.ratioToB1).toBe(1);
  });

  it('marks goals met, missed or not measured with the measured value', () => {
    const goals = new Map(results().goals.map((g) => [g.id, g]));
    expect(goals.get('W1-e2e')).toMatchObject({ status: 'missed', measured: '33.3 %' });
    expect(goals.get('W2-e2e')).toMatchObject({ status: 'met', measured: '80.0 %' });
    expect(goals.get('W2-storage')).toMatchObject({ status: 'met', measured: '1.10x' });
    expect(goals.get('W2-rss')).toMatchObject({ status: 'missed', measured: '600 MiB' });
    expect(goals.get('W1-vs-B4')).toMatchObject({ status: 'met', measured: '16.67x' });
    expect(goals.get('W3-apply')).toMatchObject({ status: 'not measured', measured: '-' });
  });

  it("puts plain kafkajs' produce rate (B2 produce vs B1) and highwater's share of it next to the W1 and W2 goals", () => {
    const goals = new Map(results().goals.map((g) => [g.id, g]));
    // W1: B1 50,000 rows/s, B2 produce 20,000 (40 % of B1, under the 50 % target), highwater 16,667.
    const w1 = goals.get('W1-e2e')!.ceiling!;
    expect(w1.b2ProduceVsB1).toBeCloseTo(0.4);
    expect(w1.highwaterVsB2Produce).toBeCloseTo(20_000 / 60_000 / 0.4);
    expect(w1.targetAboveKafkajs).toBe(true);
    // Without the Java producer's measurement nothing says what the broker takes: no target is above its ceiling.
    expect(w1.targetAboveCeiling).toBe(false);
    expect(w1).not.toHaveProperty('javaProduceVsB1');
    // W2: B1 10,000 rows/s, B2 produce 9,091 (90.9 %), highwater 8,000 (88 % of B2 produce).
    expect(goals.get('W2-e2e')!.ceiling).toEqual({ b2ProduceVsB1: expect.closeTo(100 / 110, 6), highwaterVsB2Produce: expect.closeTo(110 / 125, 6), targetAboveCeiling: false, targetAboveKafkajs: false });
    for (const id of ['W1-tree-e2e', 'W2-storage', 'W3-apply', 'W4-rebuild', 'W2-rss', 'W1-vs-B4']) expect(goals.get(id)!.ceiling).toBeUndefined();
  });

  it("takes the broker's ceiling from Kafka's Java producer when it was measured", () => {
    // W1: the Java producer at 40,000 rows/s = 80 % of B1, above the 50 % target; W2: 5,000 rows/s = 50 %, below 60 %.
    const withJava = [...measurements, m({ system: 'B2', stage: 'produce-java', ms: 25 }), m({ workload: 'W2', system: 'B2', stage: 'produce-java', ms: 200 })];
    const goals = new Map(evaluateGoals(summarize(withJava), [], []).map((g) => [g.id, g]));
    expect(goals.get('W1-e2e')!.ceiling).toMatchObject({ javaProduceVsB1: expect.closeTo(0.8, 6), targetAboveCeiling: false, targetAboveKafkajs: true });
    expect(goals.get('W2-e2e')!.ceiling).toMatchObject({ javaProduceVsB1: expect.closeTo(0.5, 6), targetAboveCeiling: true, targetAboveKafkajs: false });
    const table = goalTable([...goals.values()]);
    expect(table.split('\n')[0]).toMatch(/status\s+broker: Java producer\s+kafkajs: B2 produce\s+highwater \/ B2 produce$/);
    expect(table).toMatch(/W1-e2e .* MISSED\s+80\.0 % of B1\s+40\.0 % of B1 \(below target\)\s+83\.3 %/);
    expect(table).toContain("W1-e2e: the target (>= 50.0 % of B1) is above plain kafkajs' produce rate here (40.0 % of B1) but not above the broker's (80.0 % of B1).");
    expect(table).toContain("W2-e2e: the target (>= 60.0 % of B1) is above this broker's ceiling (50.0 % of B1): it cannot be met on this broker.");
  });

  it('leaves the ceiling out without B2 produce, and keeps a missing highwater figure as null in the JSON', () => {
    const onlyB1 = summarize(measurements.filter((x) => x.system !== 'B2'));
    expect(evaluateGoals(onlyB1, [], []).find((g) => g.id === 'W1-e2e')).not.toHaveProperty('ceiling');
    const noHighwater = summarize(measurements.filter((x) => x.system !== 'highwater'));
    const w1 = evaluateGoals(noHighwater, [], []).find((g) => g.id === 'W1-e2e')!;
    expect(JSON.parse(JSON.stringify(w1)).ceiling).toEqual({ b2ProduceVsB1: 0.4, highwaterVsB2Produce: null, targetAboveCeiling: false, targetAboveKafkajs: true });
  });
});

describe('bench rendering', () => {
  it('prints every summary row with its ratio', () => {
    const table = summaryTable(results().summary);
    expect(table.split('\n')[0]).toMatch(/^workload\s+system\s+stage/);
    expect(table).toMatch(/W1\s+highwater\s+e2e\s+3\s+1,000\s+0\.06\s+16,667\s+3\.3\s+33\.3 %/);
  });

  it('prints who spent the CPU of each stage, medians over repetitions, apart from the other observations', () => {
    const cpu = (rep: number, who: string, value: number) => ({ workload: 'W1' as const, system: 'highwater' as const, rep, name: who === 'busy' ? 'cpu (e2e): machine busy' : `cpu/row (e2e): ${who}`, value, unit: who === 'busy' ? '% of cores' : 'µs' });
    const observations = [
      ...[[1, 90, 400, 100], [2, 99, 380, 95], [3, 95, 390, 90]].flatMap(([rep, busy, all, pg]) => [cpu(rep!, 'busy', busy!), cpu(rep!, 'all processes', all!), cpu(rep!, 'postgres', pg!)]),
      cpu(1, 'kafka broker', 22), cpu(1, 'poll process', 84), cpu(1, 'consume process', 63), cpu(1, 'bench process', 5), cpu(1, 'kernel interrupts', 9), cpu(1, 'other processes', 111),
      { workload: 'W1' as const, system: 'B1' as const, rep: 1, name: 'cpu/row (copy): all processes', value: 20, unit: 'µs' },
    ];
    const table = cpuTable({ ...results(), observations }, 2);
    // 2 cores at 390 µs a row: 5,128 rows/s when every core works on the stage.
    expect(table).toMatch(/W1\s+highwater\s+e2e\s+95 %\s+390\s+95\s+22\s+poll 84, consume 63\s+5\s+9\s+111\s+5,128/);
    expect(table).toMatch(/W1\s+B1\s+copy\s+- %\s+20\s+-\s+-\s+-\s+-\s+-\s+-\s+100,000/);
    const report = renderReport({ ...results(), observations });
    expect(report).toContain('CPU of each timed stage');
    expect(report.split('CPU of each timed stage')[0]).not.toContain('cpu/row');
    expect(cpuTable(results(), 2)).toBe('');
    expect(renderReport(results())).not.toContain('CPU of each timed stage');
  });

  it('prints the machine, goals and notes in the report', () => {
    const report = renderReport(results());
    expect(report).toContain('2 cores');
    expect(report).toContain('fsync 900/s');
    expect(report).toMatch(/W1-e2e .* MISSED/);
    expect(report).toContain('- a note');
  });

  it("prints plain kafkajs' rate as the ceiling column when the broker was not measured, and says it is not the broker's", () => {
    const table = goalTable(results().goals);
    expect(table.split('\n')[0]).toMatch(/status\s+ceiling on this broker\s+highwater \/ B2 produce$/);
    expect(table).toMatch(/W1-e2e .* MISSED\s+40\.0 % of B1 \(below target\)\s+83\.3 %/);
    expect(table).toMatch(/W2-e2e .* MET\s+90\.9 % of B1\s+88\.0 %/);
    expect(table).toContain('W1-e2e: the target (>= 50.0 % of B1) is above B2 produce (40.0 % of B1) in this run.');
    expect(table).toContain("B2 produce is the client's rate, not the broker's ceiling.");
    expect(table).not.toContain('W2-e2e: the target');
  });

  it('reads a goal written by an older run (targetAboveCeiling meant above B2 produce) the same way', () => {
    const old = results().goals.map((g) => (g.ceiling === undefined ? g : { ...g, ceiling: { b2ProduceVsB1: g.ceiling.b2ProduceVsB1, highwaterVsB2Produce: g.ceiling.highwaterVsB2Produce, targetAboveCeiling: g.ceiling.targetAboveKafkajs! } }));
    expect(goalTable(old)).toBe(goalTable(results().goals));
  });

  it('renders the goals of a results file written before the ceiling without its columns', () => {
    const old = results().goals.map(({ ceiling: _ceiling, ...g }) => g);
    const table = goalTable(old);
    expect(table.split('\n')[0]).toMatch(/status$/);
    expect(table).not.toContain('ceiling');
  });

  it('draws one bar per system and workload on a log axis, escaping text', () => {
    const svg = renderSvg(results());
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<rect x=/g)).toHaveLength(7);
    expect(svg).toContain('highwater end to end');
    expect(svg).toContain('B4 Debezium');
    expect(xOfRatio(1)).toBeGreaterThan(xOfRatio(0.1));
    expect(xOfRatio(1e-6)).toBe(0);
    expect(xOfRatio(1e6)).toBe(xOfRatio(10));
  });

  it('draws a stage that never completed as an outline, and says so', () => {
    const r = results();
    const svg = renderSvg({ ...r, summary: r.summary.map((row) => (row.system === 'B4' ? { ...row, complete: false } : row)) });
    expect(svg).toMatch(/fill="white" stroke="#9467bd" stroke-dasharray/);
    expect(svg).toContain('INCOMPLETE (timed out)');
  });
});

describe('bench options', () => {
  it('splits --only into workloads and systems, all of a half when none is named', () => {
    const only = parseOnly('W1,b1,w1-TREE');
    expect([...only.workloads]).toEqual(['W1', 'W1-tree']);
    expect([...only.systems]).toEqual(['B1']);
    expect(parseOnly('highwater').workloads.size).toBeGreaterThan(5);
    expect(() => parseOnly('W9')).toThrow(/unknown workload or system/);
  });

  it('picks sizes, repetitions, seed and outputs', () => {
    const o = parseOptions(['--full', '--reps', '5', '--seed', '12', '--json', 'out/run.json'], () => 99);
    expect(o.sizes).toEqual(FULL_SIZES);
    expect(o).toMatchObject({ reps: 5, seed: 12, jsonFile: 'out/run.json', svgFile: 'out/run.svg' });
    const d = parseOptions([], () => 99);
    expect(d).toMatchObject({ sizes: DEFAULT_SIZES, reps: 3, seed: 99, jsonFile: undefined, svgFile: undefined });
    expect(() => parseOptions(['--reps', '0'], () => 1)).toThrow(/at least 1/);
    expect(() => parseOptions(['--bogus'], () => 1)).toThrow(/unknown option/);
  });

  it('scales row counts but not rates, durations or table counts', () => {
    const s = scaled(DEFAULT_SIZES, 0.1);
    expect(s.w1Rows).toBe(DEFAULT_SIZES.w1Rows / 10);
    expect(s.w5Rates).toEqual(DEFAULT_SIZES.w5Rates);
    expect(s.w6Tables).toBe(DEFAULT_SIZES.w6Tables);
  });
});
