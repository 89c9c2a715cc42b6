import type pg from 'pg';
import type { BenchContext } from '../context.js';
import { BUSINESS_UNITS, createSourceSchema, createSourceTable, qualified, sourceTable, type SourceTable } from '../env/source.js';
import { flatRows, type BenchRow } from '../rows.js';
import { cli, pollRuns, startConsume, targetProgress, targetTable, waitForRows, type HwSetup } from '../systems/highwater.js';
import { dropTarget, prepare } from '../systems/hw-stages.js';

/**
 * W5, steady load: rows committed at a fixed rate for a while, with `consume` and `poll --every` (interval 1 s)
 * running. Latency per row = target commit (applied_at) − source ModifiedOn (stamped in the committing
 * transaction), both read from the same database clock.
 */

const TICK_MS = 100;

export async function runW5(ctx: BenchContext): Promise<void> {
  if (!ctx.options.systems.has('highwater')) return;
  await createSourceSchema(ctx.source, 'w5');
  for (const rate of ctx.options.sizes.w5Rates) await steady(ctx, rate, ctx.options.sizes.w5Seconds);
}

async function steady(ctx: BenchContext, rate: number, seconds: number): Promise<void> {
  const source = sourceTable('w5', `Steady${rate}`);
  await createSourceTable(ctx.source, source);
  const rows = flatRows(ctx.options.seed + rate, rate * seconds);
  const setup = await prepare(ctx, `w5_${rate}`, [source], { pollIntervalSeconds: 1 });
  const consume = await startConsume(ctx.env, setup);
  const poll = cli(ctx.env, setup, 'poll', ['poll', '--every']);
  await firstPollDone(ctx, setup);
  ctx.log(`W5: ${rate} rows/s for ${seconds} s`);
  const writtenMs = await writeSteadily(ctx.source, source, rows, rate);
  const done = await waitForRows(() => targetProgress(ctx.target, setup), rows.length, 180_000);
  await Promise.all([poll.stop(), consume.stop()]);
  const w = 'W5' as const;
  ctx.collect.observe(w, 'highwater', rate, `offered rate ${rate}/s: achieved source rate`, (rows.length * 1000) / writtenMs, 'rows/s');
  const lat = await latencies(ctx.target, setup);
  ctx.collect.observe(w, 'highwater', rate, `latency p50 at ${rate}/s`, lat.p50, 'ms');
  ctx.collect.observe(w, 'highwater', rate, `latency p99 at ${rate}/s`, lat.p99, 'ms');
  ctx.collect.observe(w, 'highwater', rate, `latency max at ${rate}/s`, lat.max, 'ms');
  if (!done.complete) ctx.collect.note(`W5 at ${rate}/s: only ${done.rows} of ${rows.length} rows arrived within 3 minutes of the end of writing`);
  ctx.collect.peak(w, 'highwater', `poll --every (${rate}/s)`, 1, poll.peakRss());
  ctx.collect.peak(w, 'highwater', `consume (${rate}/s)`, 1, consume.peakRss());
  await dropTarget(ctx, setup);
}

/** Waits for the poller's first (empty) run, so that no row waits for the CLI to start. */
async function firstPollDone(ctx: BenchContext, setup: HwSetup): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (Number.isFinite((await pollRuns(ctx.target, setup)).finishedMs)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error('W5: the poller did not finish its first run within 120 s');
}

/** Inserts `rate / 10` rows every 100 ms in one transaction, ModifiedOn = the inserting transaction's clock. */
async function writeSteadily(pool: pg.Pool, t: SourceTable, rows: readonly BenchRow[], rate: number): Promise<number> {
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
  const started = performance.now();
  for (let i = 0, tick = 0; i < rows.length; i += perTick, tick++) {
    await insertTick(pool, t, rows.slice(i, i + perTick));
    const wait = started + (tick + 1) * TICK_MS - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  return performance.now() - started;
}

async function insertTick(pool: pg.Pool, t: SourceTable, rows: readonly BenchRow[]): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${qualified(t.schema, t.blob)} (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory)
      SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::text[], $5::text[], $6::boolean[])`,
      [rows.map((r) => r.key), rows.map((r) => r.content), rows.map((r) => r.name), rows.map((r) => r.path), rows.map((r) => r.parent), rows.map((r) => r.isDirectory)]);
    await client.query(`INSERT INTO ${qualified(t.schema, t.meta)} (id, "ModifiedOn", "OwningBusinessUnit")
      SELECT id, clock_timestamp(), $2::uuid FROM unnest($1::uuid[]) AS id`, [rows.map((r) => r.key), BUSINESS_UNITS[0]]);
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}

async function latencies(pool: pg.Pool, setup: HwSetup): Promise<{ p50: number; p99: number; max: number }> {
  const t = setup.tables[0]!;
  const { rows } = await pool.query<{ p: number[]; max: number }>(
    `SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY l) AS p, max(l) AS max
       FROM (SELECT extract(epoch FROM applied_at) * 1000 - modified_on_ticks / 10000.0 AS l FROM ${targetTable(setup, t.name)}) x`);
  return { p50: Number(rows[0]!.p[0]), p99: Number(rows[0]!.p[1]), max: Number(rows[0]!.max) };
}
