import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { targetTableName } from '../../../consumers/postgres/dialect.js';
import { quotePg } from '../../../src/sql/ident.js';
import { dbNowMs } from '../env/pgdb.js';
import { startProc, type Proc } from '../env/procs.js';
import { BU_TABLE, type SourceTable } from '../env/source.js';

/**
 * highwater driven as a user runs it: a configuration file and the CLI (`init`, `poll`, `consume`, `rebuild`),
 * poller and consumer in processes of their own so that each one's peak RSS is its own.
 */

export interface HwEnv {
  readonly brokers: readonly string[];
  readonly sourceUrl: string;
  readonly targetUrl: string;
  readonly target: pg.Pool;
  readonly workDir: string;
  readonly repoDir: string;
  /** Run the CLI processes with --cpu-prof into the work directory. */
  readonly profile: boolean;
}

/** One configuration: its own control-store schema, topics, target schema and group, all named after `tag`. */
export interface HwSetup {
  readonly tag: string;
  readonly configFile: string;
  readonly controlSchema: string;
  readonly targetSchema: string;
  readonly tables: readonly { name: string; topic: string }[];
}

export interface HwConfigOptions {
  readonly pollIntervalSeconds?: number;
  readonly logLevel?: string;
  /** Name the topics after this tag instead (several setups replaying one topic). */
  readonly topicTag?: string;
}

export async function writeHwConfig(env: HwEnv, tag: string, sources: readonly SourceTable[], options: HwConfigOptions = {}): Promise<HwSetup> {
  const tables = sources.map((s) => ({ name: s.blob, topic: `hwb.${options.topicTag ?? tag}.${s.blob}` }));
  const setup: HwSetup = { tag, configFile: join(env.workDir, `${tag}.yaml`), controlSchema: `hwc_${tag}`, targetSchema: `hwt_${tag}`, tables };
  const config = {
    controlStore: { database: 'target', schema: setup.controlSchema },
    kafka: { brokers: env.brokers, clientId: `hwb-${tag}`, partitions: 6 },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: env.sourceUrl },
      { name: 'target', kind: 'postgres', connectionString: env.targetUrl },
    ],
    tables: sources.map((s, i) => ({
      name: s.blob, source: 'source', topic: tables[i]!.topic,
      blob: { schema: s.schema, table: s.blob },
      metadata: { schema: s.schema, table: s.meta, joinColumn: 'id' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: s.schema, table: BU_TABLE, idColumn: 'BusinessUnitId' } },
      // The rows are committed before the poll starts; everything else stays at its default.
      safetyBufferMinutes: 0,
    })),
    targets: [{ name: 'bench', database: 'target', schema: setup.targetSchema, groupId: `hwb.${tag}` }],
    poll: { intervalSeconds: options.pollIntervalSeconds ?? 3600 },
    log: { level: options.logLevel ?? 'info' },
  };
  // JSON is YAML: the CLI reads it as is.
  await writeFile(setup.configFile, JSON.stringify(config, null, 2));
  return setup;
}

export function cli(env: HwEnv, setup: HwSetup, name: string, args: readonly string[]): Proc {
  const prof = env.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(env.workDir, 'profiles')}`, `--cpu-prof-name=${setup.tag}-${name}-${Date.now()}.cpuprofile`] : [];
  return startProc({
    name: `${name} (${setup.tag})`,
    command: process.execPath,
    args: [...prof, join(env.repoDir, 'src/cli/bin.js'), '--config', setup.configFile, ...args],
    logFile: join(env.workDir, `${setup.tag}-${name}.log`),
    cwd: env.repoDir,
  });
}

/** Runs a CLI command to its end and fails loudly on a non-zero exit. */
export async function runCli(env: HwEnv, setup: HwSetup, name: string, args: readonly string[]): Promise<Proc> {
  const proc = cli(env, setup, name, args);
  const code = await proc.exited;
  if (code !== 0) throw new Error(`highwater ${args.join(' ')} exited with ${String(code)}; last output:\n${proc.tail()}`);
  return proc;
}

/** Starts `consume` and waits until it says it is consuming. */
export async function startConsume(env: HwEnv, setup: HwSetup): Promise<Proc> {
  const proc = cli(env, setup, 'consume', ['consume']);
  await proc.waitForLine(/consuming; SIGINT or SIGTERM stops/, 120_000);
  return proc;
}

export function targetTable(setup: HwSetup, table: string, schema = setup.targetSchema): string {
  return `${quotePg(schema)}.${quotePg(targetTableName(table))}`;
}

export interface Progress {
  readonly rows: number;
  /** Database-clock epoch ms of the last commit seen (max applied_at), NaN when empty. */
  readonly lastCommitMs: number;
  /** Database-clock epoch ms of the first commit (min applied_at), NaN when empty. */
  readonly firstCommitMs?: number;
}

/** Rows in the target tables of a setup, and when the last one was written. */
export async function targetProgress(pool: pg.Pool, setup: HwSetup, where = 'true', schema = setup.targetSchema): Promise<Progress> {
  let rows = 0;
  let last = Number.NaN;
  let first = Number.NaN;
  for (const t of setup.tables) {
    const { rows: r } = await pool.query<{ n: string; first: string | null; last: string | null }>(
      `SELECT count(*) AS n, (extract(epoch FROM min(applied_at)) * 1000)::float8 AS first, (extract(epoch FROM max(applied_at)) * 1000)::float8 AS last
         FROM ${targetTable(setup, t.name, schema)} WHERE ${where}`);
    rows += Number(r[0]!.n);
    if (r[0]!.last !== null) last = Number.isNaN(last) ? Number(r[0]!.last) : Math.max(last, Number(r[0]!.last));
    if (r[0]!.first !== null) first = Number.isNaN(first) ? Number(r[0]!.first) : Math.min(first, Number(r[0]!.first));
  }
  return { rows, lastCommitMs: last, firstCommitMs: first };
}

const WAIT_STEP_MS = 250;

/**
 * Polls until `expected` rows are there or the time is up; returns the last progress seen. `mayBeDone`, when given,
 * is a cheap necessary condition asked first: the exact probe (a count over the growing target, which competes with
 * the pipeline it measures for the same two cores) runs only once it holds, and at the end.
 */
export async function waitForRows(probe: () => Promise<Progress>, expected: number, timeoutMs: number, alive?: () => boolean, mayBeDone?: () => Promise<boolean>): Promise<Progress & { complete: boolean }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const over = Date.now() > deadline || (alive !== undefined && !alive());
    if (over || mayBeDone === undefined || (await mayBeDone())) {
      const p = await probe();
      if (p.rows >= expected) return { ...p, complete: true };
      if (over) return { ...p, complete: false };
    }
    await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
  }
}

/**
 * Whether the target may hold `expected` rows of a setup: the offsets it stores for the table topics add up to at
 * least that. Every row applied came from a record below its partition's stored offset (held and retried rows too),
 * so fewer offsets mean fewer rows; the reverse does not hold (markers, chunks, superseded versions), hence only a
 * gate for the exact count. One small table read instead of a count over the target.
 */
export function offsetsReach(pool: pg.Pool, setup: HwSetup, expected: number, schema = setup.targetSchema): () => Promise<boolean> {
  return async () => {
    try {
      const { rows } = await pool.query<{ n: string }>(`SELECT coalesce(sum(next_offset), 0) AS n FROM ${quotePg(schema)}.hw_offsets WHERE topic = ANY($1::text[])`, [setup.tables.map((t) => t.topic)]);
      return Number(rows[0]!.n) >= expected;
    } catch (err) {
      if ((err as { code?: string }).code === '42P01') return false; // the consumer has not created its tables yet
      throw err;
    }
  };
}

/** Start and end (database clock, epoch ms) of the poll runs of a control store, and rows they published. */
export async function pollRuns(pool: pg.Pool, setup: HwSetup): Promise<{ startedMs: number; finishedMs: number; published: number }> {
  const cs = quotePg(setup.controlSchema);
  const { rows } = await pool.query<{ s: string; f: string | null; published: string | null }>(
    `SELECT (extract(epoch FROM min(r.started_at)) * 1000)::float8 AS s, (extract(epoch FROM max(r.finished_at)) * 1000)::float8 AS f,
            (SELECT sum(rows) FROM ${cs}.run_batches WHERE step <> 'deletes') AS published
       FROM ${cs}.runs r WHERE r.kind = 'poll'`);
  return { startedMs: Number(rows[0]!.s), finishedMs: Number(rows[0]!.f), published: Number(rows[0]!.published ?? 0) };
}

export { dbNowMs };
