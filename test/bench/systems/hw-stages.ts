import type { Admin } from 'kafkajs';
import { quotePg } from '../../../src/sql/ident.js';
import type { BenchContext } from '../context.js';
import { stageTimeoutMs } from '../context.js';
import type { WorkloadId } from '../model.js';
import type { SourceTable } from '../env/source.js';
import { observeCpu } from './cpu-split.js';
import { cli, dbNowMs, offsetsReach, pollRuns, runCli, startConsume, targetProgress, waitForRows, writeHwConfig, type HwConfigOptions, type HwSetup } from './highwater.js';

/**
 * highwater's stages on one workload, each in fresh names: poll alone (into a topic nobody reads yet), apply
 * alone (a new group and an empty target replaying that topic), end to end (consumer running, then the poller),
 * and a rebuild. Timings use the database clock on both ends.
 */

export interface Expect {
  readonly rows: number;
  readonly bytes: number;
  /** SQL condition on the target rows that counts a row as arrived (default: every row). */
  readonly where?: string;
  /** Units the rows stand for in the rate (W3: every version in the topic), when not the rows themselves. */
  readonly units?: number;
}

const BACKFILL_TOPIC = 'highwater.backfill-requests';

/** Content bytes of the rows that arrived, assuming rows of even size (all of them when every row arrived). */
function arrivedBytes(expect: Expect, rows: number): number {
  return rows >= expect.rows ? expect.bytes : (expect.bytes * rows) / expect.rows;
}

/** What the rate counts: the rows, or the units they stand for, in proportion to the rows that arrived. */
function arrivedUnits(expect: Expect, rows: number): number {
  return expect.units === undefined ? rows : Math.round((expect.units * Math.min(rows, expect.rows)) / expect.rows);
}

/** Writes the configuration and runs `highwater init`, which creates the topics (the product's path, no workaround). */
export async function prepare(ctx: BenchContext, tag: string, sources: readonly SourceTable[], options?: HwConfigOptions): Promise<HwSetup> {
  const setup = await writeHwConfig(ctx.env, tag, sources, options);
  await runCli(ctx.env, setup, 'init', ['init']);
  return setup;
}

export async function pollAlone(ctx: BenchContext, w: WorkloadId, rep: number, setup: HwSetup, expect: Expect, record = true): Promise<void> {
  const proc = await runCli(ctx.env, setup, 'poll', ['poll']);
  const runs = await pollRuns(ctx.target, setup);
  if (!record) return;
  ctx.collect.measure({ workload: w, system: 'highwater', stage: 'poll', rep, rows: runs.published, bytes: expect.bytes, ms: runs.finishedMs - runs.startedMs, complete: runs.published >= expect.rows });
  ctx.collect.peak(w, 'highwater', 'poll', rep, proc.peakRss());
  await observeCpu(ctx, w, 'highwater', 'poll', rep, { startMs: runs.startedMs, endMs: runs.finishedMs, rows: runs.published, processes: [{ name: 'poll', pid: proc.pid }] });
}

export async function applyAlone(ctx: BenchContext, w: WorkloadId, rep: number, setup: HwSetup, expect: Expect): Promise<void> {
  const before = await sideTopicCounts(ctx, setup);
  const consume = await startConsume(ctx.env, setup);
  const started = await dbNowMs(ctx.target);
  const done = await waitForRows(() => targetProgress(ctx.target, setup, expect.where), expect.rows, stageTimeoutMs(expect.rows, 100, expect.bytes), undefined, offsetsReach(ctx.target, setup, expect.rows));
  await consume.stop();
  ctx.collect.measure({ workload: w, system: 'highwater', stage: 'apply', rep, rows: arrivedUnits(expect, done.rows), bytes: arrivedBytes(expect, done.rows), ms: done.lastCommitMs - started, complete: done.complete });
  ctx.collect.observe(w, 'highwater', rep, 'apply: consumer ready -> first target commit', ((done.firstCommitMs ?? Number.NaN) - started) / 1000, 's');
  ctx.collect.peak(w, 'highwater', 'consume', rep, consume.peakRss());
  await observeCpu(ctx, w, 'highwater', 'apply', rep, { startMs: started, endMs: done.lastCommitMs, rows: arrivedUnits(expect, done.rows), processes: [{ name: 'consume', pid: consume.pid }] });
  await observeSideTopics(ctx, w, rep, setup, before, 'apply');
}

/** Consumer first (ready), then `poll --every` (which also serves back-fill requests); until every row arrived. */
export async function endToEnd(ctx: BenchContext, w: WorkloadId, rep: number, setup: HwSetup, expect: Expect): Promise<boolean> {
  const before = await sideTopicCounts(ctx, setup);
  const consume = await startConsume(ctx.env, setup);
  const poll = cli(ctx.env, setup, 'poll', ['poll', '--every']);
  const done = await waitForRows(() => targetProgress(ctx.target, setup, expect.where), expect.rows, stageTimeoutMs(expect.rows, 100, expect.bytes), () => poll.pid > 0, offsetsReach(ctx.target, setup, expect.rows));
  await Promise.all([poll.stop(), consume.stop()]);
  const runs = await pollRuns(ctx.target, setup);
  ctx.collect.measure({ workload: w, system: 'highwater', stage: 'e2e', rep, rows: done.rows, bytes: arrivedBytes(expect, done.rows), ms: done.lastCommitMs - runs.startedMs, complete: done.complete });
  ctx.collect.observe(w, 'highwater', rep, 'e2e: poll run (concurrent with apply)', (runs.finishedMs - runs.startedMs) / 1000, 's');
  ctx.collect.observe(w, 'highwater', rep, 'e2e: poll start -> first target commit', ((done.firstCommitMs ?? Number.NaN) - runs.startedMs) / 1000, 's');
  ctx.collect.peak(w, 'highwater', 'poll', rep, poll.peakRss());
  ctx.collect.peak(w, 'highwater', 'consume', rep, consume.peakRss());
  await observeCpu(ctx, w, 'highwater', 'e2e', rep, { startMs: runs.startedMs, endMs: done.lastCommitMs, rows: done.rows, processes: [{ name: 'poll', pid: poll.pid }, { name: 'consume', pid: consume.pid }] });
  await observeSideTopics(ctx, w, rep, setup, before, 'e2e');
  return done.complete;
}

/** The line `highwater rebuild` logs once its consumers run (src/ops/rebuild.ts): the replay's start. */
const REBUILD_READY = /rebuild consumers started; replaying the table topics/;

/**
 * `highwater rebuild` of a setup's target into a fresh schema; timed, like apply, from its consumers being ready (the
 * line above) to the rebuild's last commit. The CLI's start-up before that (tsx compiling the sources, clients,
 * schema, topics) is reported apart, as an observation.
 */
export async function rebuild(ctx: BenchContext, w: WorkloadId, rep: number, setup: HwSetup, expect: Expect): Promise<void> {
  const into = `hwr_${setup.tag}`;
  const timeoutMs = stageTimeoutMs(expect.rows, 100, expect.bytes);
  const spawned = await dbNowMs(ctx.target);
  const proc = cli(ctx.env, setup, 'rebuild', ['rebuild', '--target', 'bench', '--into', into, '--timeout', String(Math.round(timeoutMs / 1000))]);
  const ready = await proc.waitForLine(REBUILD_READY, timeoutMs).then(() => dbNowMs(ctx.target), () => Number.NaN);
  const code = await proc.exited;
  const done = await targetProgress(ctx.target, setup, expect.where, into);
  const complete = code === 0 && done.rows >= expect.rows && !Number.isNaN(ready);
  const note = Number.isNaN(ready) ? `no "consumers started" line seen (exit ${String(code)})` : code !== 0 ? `exit ${String(code)}` : complete ? undefined : `caught up with ${expect.rows - done.rows} rows still missing`;
  ctx.collect.measure({ workload: w, system: 'highwater', stage: 'rebuild', rep, rows: done.rows, bytes: arrivedBytes(expect, done.rows), ms: done.lastCommitMs - ready, complete, ...(note === undefined ? {} : { note }) });
  ctx.collect.observe(w, 'highwater', rep, 'rebuild: spawn -> consumers ready (CLI start-up)', (ready - spawned) / 1000, 's');
  ctx.collect.observe(w, 'highwater', rep, 'rebuild: consumers ready -> first target commit', ((done.firstCommitMs ?? Number.NaN) - ready) / 1000, 's');
  ctx.collect.peak(w, 'highwater', 'rebuild', rep, proc.peakRss());
  await observeCpu(ctx, w, 'highwater', 'rebuild', rep, { startMs: ready, endMs: done.lastCommitMs, rows: done.rows, processes: [{ name: 'rebuild', pid: proc.pid }] });
  await ctx.target.query(`DROP SCHEMA IF EXISTS ${quotePg(into)} CASCADE`);
}

export async function dropTarget(ctx: BenchContext, setup: HwSetup): Promise<void> {
  await ctx.target.query(`DROP SCHEMA IF EXISTS ${quotePg(setup.targetSchema)} CASCADE`);
}

interface SideCounts {
  readonly retry: number;
  readonly backfill: number;
}

async function sideTopicCounts(ctx: BenchContext, setup: HwSetup): Promise<SideCounts> {
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    let retry = 0;
    for (const t of setup.tables) retry += await endOffsetSum(admin, `${t.topic}.retry`);
    return { retry, backfill: await endOffsetSum(admin, BACKFILL_TOPIC) };
  } finally {
    await admin.disconnect();
  }
}

async function endOffsetSum(admin: Admin, topic: string): Promise<number> {
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((sum, p) => sum + Number(p.high), 0);
  } catch {
    // The topic does not exist (yet): nothing was written to it.
    return 0;
  }
}

async function observeSideTopics(ctx: BenchContext, w: WorkloadId, rep: number, setup: HwSetup, before: SideCounts, stage: string): Promise<void> {
  const after = await sideTopicCounts(ctx, setup);
  ctx.collect.observe(w, 'highwater', rep, `retry-topic records (${stage})`, after.retry - before.retry, 'records');
  ctx.collect.observe(w, 'highwater', rep, `back-fill requests (${stage})`, after.backfill - before.backfill, 'requests');
}
