import { randomInt } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureKafkaRuntime, KAFKA_VERSION, startKafka, type KafkaBroker } from '../../src/dev/kafka/kafka.js';
import { Collector } from './collector.js';
import type { BenchContext } from './context.js';
import { fingerprint, load } from './env/machine.js';
import { createDatabase, DEFAULT_PG_URL, dropDatabase, quietPool, withDatabase } from './env/pgdb.js';
import type { BenchResults, WorkloadId } from './model.js';
import { parseOptions, USAGE, type BenchOptions } from './options.js';
import { renderReport } from './render-table.js';
import { renderSvg } from './render-svg.js';
import { DEFAULT_TREE, MIB, blobRows, flatRows, mixedSize, treeRows } from './rows.js';
import { evaluateGoals, summarize } from './summary.js';
import { rawKafka } from './systems/kafka-raw.js';
import { CpuSampler } from './env/cpu.js';
import { runBulk } from './workloads/bulk.js';
import { runW3 } from './workloads/w3.js';
import { runW5 } from './workloads/w5.js';
import { runW6 } from './workloads/w6.js';

/**
 * `npm run bench`: highwater and its baselines on the same rows, the same broker and the same PostgreSQL, in one
 * run, interleaved repetitions, medians. Prints a table; --json writes the results and an SVG chart beside them.
 * Asserts no timings: it measures and reports.
 */

const REPO_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

async function main(argv: readonly string[]): Promise<number> {
  const options = parseOptions(argv, () => randomInt(1, 2 ** 31 - 1));
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (options.renderFrom !== undefined) return render(options);
  const results = await measure(options);
  process.stdout.write(`\n${renderReport(results)}\n`);
  await writeOutputs(options, results);
  return 0;
}

async function render(options: BenchOptions): Promise<number> {
  const stored = JSON.parse(await readFile(options.renderFrom!, 'utf8')) as BenchResults;
  // The goals are a pure function of what the file holds: evaluated again, a file written before a goal's ceiling
  // (or a change of a goal) reads as a new run would.
  const results: BenchResults = { ...stored, goals: evaluateGoals(stored.summary, stored.observations, stored.rss) };
  process.stdout.write(`${renderReport(results)}\n`);
  await writeOutputs(options, results);
  return 0;
}

async function writeOutputs(options: BenchOptions, results: BenchResults): Promise<void> {
  if (options.jsonFile !== undefined && options.renderFrom === undefined) {
    await writeFile(options.jsonFile, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`results: ${options.jsonFile}\n`);
  }
  if (options.svgFile !== undefined) {
    await writeFile(options.svgFile, renderSvg(results));
    process.stdout.write(`chart: ${options.svgFile}\n`);
  }
}

const log = (line: string): void => {
  process.stdout.write(`${new Date().toISOString().slice(11, 19)} ${line}\n`);
};

async function measure(options: BenchOptions): Promise<BenchResults> {
  const startedAt = new Date().toISOString();
  log(`seed ${options.seed} (replay with --seed ${options.seed}); ${options.full ? 'full' : 'default'} sizes; ${options.reps} repetitions`);
  const workDir = await mkdtemp(join(tmpdir(), 'highwater-bench-'));
  await mkdir(join(workDir, 'profiles'));
  const adminUrl = process.env.HIGHWATER_BENCH_PG_URL ?? DEFAULT_PG_URL;
  const admin = quietPool(adminUrl, 2);
  const dbs = { source: `hwbench_${process.pid}_source`, target: `hwbench_${process.pid}_target` };
  let broker: KafkaBroker | undefined;
  let cpu: CpuSampler | null = null;
  const collect = new Collector(log);
  try {
    const machine = await fingerprint(workDir, admin, KAFKA_VERSION);
    log(`machine: ${machine.cores} cores, load ${machine.loadAverage.map((l) => l.toFixed(2)).join(' ')}, fsync ${Math.round(machine.fsyncPerSecond)}/s`);
    for (const db of Object.values(dbs)) await createDatabase(admin, db);
    broker = await startKafka({ runtime: await ensureKafkaRuntime(), dataDir: join(workDir, 'kafka'), logFile: join(workDir, 'kafka.log'), heapMb: 1024 });
    log(`Kafka ${KAFKA_VERSION} on ${broker.bootstrap}; work directory ${workDir}`);
    const cleanups: (() => Promise<void>)[] = [];
    const started = broker;
    cpu = CpuSampler.start(machine.cores, () => started.pid);
    const ctx = context(options, collect, workDir, adminUrl, dbs, broker.bootstrap, cleanups, cpu);
    try {
      await runWorkloads(ctx);
    } finally {
      for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => log(`clean-up failed: ${String(err)}`));
      await Promise.allSettled([ctx.source.end(), ctx.target.end()]);
    }
    const summary = summarize(collect.measurements);
    return {
      startedAt, finishedAt: new Date().toISOString(), seed: options.seed,
      command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
      sizes: { ...options.sizes, w5Rates: options.sizes.w5Rates.length, reps: options.reps } as unknown as Record<string, number>,
      machine: { ...machine, loadAverageAfter: load() },
      notes: collect.notes, measurements: collect.measurements, rss: collect.rss, observations: collect.observations,
      summary, goals: evaluateGoals(summary, collect.observations, collect.rss),
    };
  } finally {
    cpu?.stop();
    await broker?.stop();
    for (const db of Object.values(dbs)) await dropDatabase(admin, db).catch(() => undefined);
    await admin.end();
    if (!options.keep) await rm(workDir, { recursive: true, force: true });
    else log(`work directory kept: ${workDir}`);
  }
}

function context(options: BenchOptions, collect: Collector, workDir: string, adminUrl: string, dbs: { source: string; target: string }, bootstrap: string, cleanups: (() => Promise<void>)[], cpu: CpuSampler | null): BenchContext {
  const sourceUrl = withDatabase(adminUrl, dbs.source);
  const targetUrl = withDatabase(adminUrl, dbs.target);
  const target = quietPool(targetUrl);
  return {
    options, collect, cpu, log, defer: (cleanup) => cleanups.push(cleanup),
    env: { brokers: [bootstrap], sourceUrl, targetUrl, target, workDir, repoDir: REPO_DIR, profile: options.profile },
    source: quietPool(sourceUrl), target,
    kafka: rawKafka([bootstrap], 'highwater-bench'),
  };
}

async function runWorkloads(ctx: BenchContext): Promise<void> {
  const { sizes, seed } = ctx.options;
  const on = (w: WorkloadId): boolean => ctx.options.workloads.has(w);
  if (on('W1')) await runBulk(ctx, { id: 'W1', schema: 'w1', rows: () => flatRows(seed, sizes.w1Rows), systems: ['B1', 'B2', 'B3', 'highwater', 'B4'] });
  if (on('W1-tree') || on('W4')) {
    await runBulk(ctx, {
      id: 'W1-tree', schema: 'wtree', rows: () => treeRows(seed + 1, { count: sizes.treeRows, ...DEFAULT_TREE }),
      systems: ['B1', 'highwater'], rebuildToo: on('W4'), measure: on('W1-tree'),
    });
  }
  if (on('W2')) await runBulk(ctx, { id: 'W2', schema: 'w2', rows: () => blobRows(seed + 2, sizes.w2Blobs, () => MIB), systems: ['B1', 'B2', 'B3', 'highwater'] });
  if (on('W2-mixed')) await runBulk(ctx, { id: 'W2-mixed', schema: 'w2m', rows: () => blobRows(seed + 22, sizes.w2MixedRows, mixedSize, 'w2m'), systems: ['B1', 'B2', 'highwater'] });
  if (on('W3')) await runW3(ctx);
  if (on('W6')) await runW6(ctx);
  if (on('W5')) await runW5(ctx);
}

// The loop is kept alive until main settles: awaiting the exit of a child that is unref'd (the broker) must not let
// Node end the run silently, with code 0 and nothing written. Then exit explicitly: a client library's stray timer
// or socket must not keep a finished (or failed) run alive either.
const keepAlive = setInterval(() => undefined, 60_000);
main(process.argv.slice(2)).finally(() => clearInterval(keepAlive)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
