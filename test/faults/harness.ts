/**
 * The fault harness: a pipeline of real processes (`highwater poll --every` and `highwater consume` started from
 * the CLI with configuration files), a seeded load on a FileTable-like PostgreSQL source, and the invariant checks
 * of ../shared/RELIABILITY.md once the fault is removed.
 *
 * A scenario is: start the pipeline, run a load, inject the fault at a seeded moment of it, remove the fault, then
 * wait until the pipeline has converged (I1 and I3 hold and the consumers' stored offsets reach the end of the
 * topic: lag 0). The time from the end of the fault (and of the load) to convergence is the recovery time, and it
 * must stay under the bound the scenario states (I5). I2 is checked over the whole run by an audit trigger, and
 * duplicates (I4) are counted and reported.
 *
 * Each pipeline owns its databases, topics, group ids and log directory; they are removed when the scenario passed
 * and kept (and named) when it failed.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { targetTableName } from '../../consumers/postgres/dialect.js';
import { dlqTopicFor, retryTopicFor } from '../../src/config/load.js';
import { HEADERS } from '../../src/contract.js';
import { SOURCE_DDL, createBusinessUnits, insertRows } from '../../src/dev/demo/sample.js';
import { quotePg } from '../../src/sql/ident.js';
import { checkInvariants, formatReport, installAuditTrigger, type InvariantReport, type ReplicatedTable } from '../convergence/invariants.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(REPO, 'src/cli/bin.js');
const TARGET_SCHEMA = 'tgt';

// ---------------------------------------------------------------------------------------------------------------
// Seeded randomness: every choice of a scenario comes from its printed seed.

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** HIGHWATER_TEST_SEED replays a run; otherwise a fresh seed, which the caller prints. */
export function runSeed(): number {
  const fromEnv = process.env.HIGHWATER_TEST_SEED;
  return fromEnv ? Number(fromEnv) : randomBytes(4).readUInt32BE() >>> 1;
}

// ---------------------------------------------------------------------------------------------------------------
// Databases on a given server (the shared one, or a private cluster the scenario stops and starts).

async function onServer(serverUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function withDatabase(serverUrl: string, database: string, appName?: string): string {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  if (appName !== undefined) url.searchParams.set('application_name', appName);
  return url.toString();
}

/** Points a URL at another port of 127.0.0.1 (a fault proxy in front of the server). */
export function viaPort(url: string, port: number): string {
  const u = new URL(url);
  u.host = `127.0.0.1:${port}`;
  return u.toString();
}

function quietPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 3, connectionTimeoutMillis: 10_000 });
  // Faults end sessions under the pool's feet (57P01, resets); the next query takes a fresh connection.
  pool.on('error', () => undefined);
  return pool;
}

// ---------------------------------------------------------------------------------------------------------------
// Processes

export interface ServiceProcess {
  readonly name: string;
  readonly role: 'poll' | 'consume';
  pid(): number;
  running(): boolean;
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM (or the given signal), SIGKILL after 20 s; resolves on exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a fresh process with the same role and configuration (after a kill). */
  restart(): Promise<void>;
  /** Exit codes and signals of the processes that ended, in order. */
  readonly exits: { code: number | null; signal: NodeJS.Signals | null; asked: boolean }[];
}

function spawnService(name: string, role: 'poll' | 'consume', configPath: string, logDir: string, env: NodeJS.ProcessEnv): ServiceProcess {
  let child: ChildProcess;
  let exited: Promise<void>;
  const exits: { code: number | null; signal: NodeJS.Signals | null; asked: boolean }[] = [];
  // Set when the harness stops or kills the process, so only exits nobody asked for are reported.
  let asked = false;
  const launch = (): void => {
    const log = openSync(join(logDir, `${name}.log`), 'a');
    const args = role === 'poll' ? [BIN, '--config', configPath, 'poll', '--every'] : [BIN, '--config', configPath, 'consume'];
    child = spawn(process.execPath, args, { cwd: REPO, env, stdio: ['ignore', log, log] });
    closeSync(log);
    const c = child;
    asked = false;
    exited = new Promise((resolve) => c.once('exit', (code, sig) => {
      exits.push({ code, signal: sig, asked });
      resolve();
    }));
  };
  launch();
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    asked = true;
    if (running()) {
      // A frozen process must be thawed to act on SIGTERM.
      child.kill('SIGCONT');
      child.kill(signal);
    }
    const timer = setTimeout(() => running() && child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    name, role, exits,
    pid: () => child.pid ?? 0,
    running,
    signal: (s) => void (running() && child.kill(s)),
    stop,
    restart: async () => {
      await stop('SIGKILL');
      launch();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The pipeline

export interface PipelineOptions {
  readonly label: string;
  /** The server the source and target databases are created on. */
  readonly pgServerUrl: string;
  /** Brokers as the services and the harness reach them. */
  readonly brokers: readonly string[];
  /** Brokers as the poller and the consumers reach them (a broker advertised at a fault proxy), default `brokers`. */
  readonly serviceBrokers?: readonly string[];
  /** Brokers as the consumers reach them (a proxy), default `serviceBrokers`. */
  readonly consumerBrokers?: readonly string[];
  /** Maps the target database URL the consumers use (e.g. through a fault proxy). */
  readonly consumerTargetUrl?: (url: string) => string;
  /** Maps the source database URL the poller uses. */
  readonly pollerSourceUrl?: (url: string) => string;
  readonly consumers?: number;
  /** Poller processes on the table (default 1); more than one compete for its lease. */
  readonly pollers?: number;
  readonly partitions?: number;
  readonly replicationFactor?: number;
  readonly sessionTimeoutMs?: number;
  readonly batchSize?: number;
  readonly batchMaxRecords?: number;
  /** Environment added to the poller's (e.g. libfaketime). */
  readonly pollerEnv?: NodeJS.ProcessEnv;
}

export interface Pipeline {
  readonly label: string;
  readonly topic: string;
  readonly groupId: string;
  readonly logDir: string;
  readonly source: pg.Pool;
  readonly target: pg.Pool;
  readonly sourceDatabase: string;
  readonly targetDatabase: string;
  /** The first poller. */
  readonly poller: ServiceProcess;
  readonly pollers: ServiceProcess[];
  readonly consumers: ServiceProcess[];
  readonly bus: readonly string[];
  /** Another consumer instance in the group. */
  addConsumer(): ServiceProcess;
  /** Ends the sessions highwater's processes hold on the source and target (not the harness's own). */
  terminateServiceSessions(which?: 'poller' | 'consumer' | 'all'): Promise<number>;
  /** I1–I4 now. */
  check(): Promise<InvariantReport>;
  /** Sum over partitions of the topic end minus the target's stored offset. */
  lag(): Promise<number>;
  /** Members of the consumer group once it is stable (0 while it rebalances). */
  members(): Promise<number>;
  /** Publishes one undecodable change record with `key` to the table topic (I6: it must be dead-lettered). */
  publishPoison(key: string): Promise<void>;
  /** The dead letters of the table topic, as `highwater dlq list --json` reports them. */
  deadLetters(): Promise<DeadLetterSeen[]>;
  /** Stops the processes; drops the databases and the log directory when `passed`, keeps them otherwise. */
  close(passed: boolean): Promise<void>;
}

/** A dead letter as `highwater dlq list --json` shows it (the fields I6 looks at). */
export interface DeadLetterSeen {
  readonly key: string;
  readonly errorKind: string | null;
  readonly reason: string | null;
}

const APP_POLLER = 'hw-fault-poller';
const APP_CONSUMER = 'hw-fault-consumer';

export async function startPipeline(options: PipelineOptions): Promise<Pipeline> {
  const id = randomBytes(3).toString('hex');
  const base = `hw_f_${options.label.toLowerCase().replace(/[^a-z0-9]+/g, '_').slice(0, 30)}_${id}`;
  const sourceDatabase = `${base}_src`;
  const targetDatabase = `${base}_tgt`;
  await onServer(options.pgServerUrl, `CREATE DATABASE ${quotePg(sourceDatabase)}`);
  await onServer(options.pgServerUrl, `CREATE DATABASE ${quotePg(targetDatabase)}`);
  const logDir = await mkdtemp(join(tmpdir(), `hw-faults-${options.label.replace(/[^a-z0-9]+/gi, '-')}-`));
  const source = quietPool(withDatabase(options.pgServerUrl, sourceDatabase));
  const target = quietPool(withDatabase(options.pgServerUrl, targetDatabase));
  await source.query(SOURCE_DDL);
  const bus = await createBusinessUnits(source, 2);

  const tableName = `Faults_${id}`;
  const topic = `hw-faults-${options.label.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-${id}`;
  const groupId = `${topic}-group`;
  const raw = (role: 'poll' | 'consume'): Record<string, unknown> => {
    const sourceUrl = withDatabase(options.pgServerUrl, sourceDatabase, role === 'poll' ? APP_POLLER : APP_CONSUMER);
    const targetUrl = withDatabase(options.pgServerUrl, targetDatabase, role === 'poll' ? APP_POLLER : APP_CONSUMER);
    return {
      controlStore: { database: 'target', schema: 'hw_control' },
      kafka: {
        brokers: [...serviceBrokers(options, role)],
        partitions: options.partitions ?? 3,
        replicationFactor: options.replicationFactor ?? 1,
        clientId: `${topic}-${role}`,
      },
      databases: [
        { name: 'source', kind: 'postgres', connectionString: role === 'poll' && options.pollerSourceUrl ? options.pollerSourceUrl(sourceUrl) : sourceUrl, poolSize: 3 },
        { name: 'target', kind: 'postgres', connectionString: role === 'consume' && options.consumerTargetUrl ? options.consumerTargetUrl(targetUrl) : targetUrl, poolSize: 3 },
      ],
      tables: [{
        name: tableName, source: 'source', topic,
        blob: { schema: 'demo', table: 'ReferralAttachment' },
        metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
        businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
        safetyBufferMinutes: 0,
        batchSize: options.batchSize ?? 100,
      }],
      targets: [{
        name: 'replica', database: 'target', schema: TARGET_SCHEMA, groupId,
        batchMaxRecords: options.batchMaxRecords ?? 500,
        sessionTimeoutMs: options.sessionTimeoutMs ?? 6000,
        retry: { initialDelayMs: 300, maxDelayMs: 3000, maxAttempts: 10, backfillAfterAttempts: 3 },
      }],
      poll: { intervalSeconds: 1, leaseSeconds: 15 },
      log: { level: 'warn' },
    };
  };
  const pollConfig = join(logDir, 'poll.yaml');
  const consumeConfig = join(logDir, 'consume.yaml');
  // JSON is YAML: the configuration files are written as JSON.
  await writeFile(pollConfig, JSON.stringify(raw('poll'), null, 2));
  await writeFile(consumeConfig, JSON.stringify(raw('consume'), null, 2));
  const env = childEnv();
  await runOnce(['--config', pollConfig, 'init'], env, join(logDir, 'init.log'));

  const table: ReplicatedTable = {
    source: {
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
    },
    target: { schema: TARGET_SCHEMA, table: targetTableName(tableName) },
  };
  await installAuditTrigger(target, table);

  const pollers = Array.from({ length: options.pollers ?? 1 }, (_, i) => spawnService(i === 0 ? 'poller' : `poller-${i + 1}`, 'poll', pollConfig, logDir, { ...env, ...options.pollerEnv }));
  const poller = pollers[0]!;
  const consumers: ServiceProcess[] = [];
  const addConsumer = (): ServiceProcess => {
    const c = spawnService(`consumer-${consumers.length + 1}`, 'consume', consumeConfig, logDir, env);
    consumers.push(c);
    return c;
  };
  for (let i = 0; i < (options.consumers ?? 1); i++) addConsumer();
  const admin = new Kafka({ clientId: `${topic}-harness`, brokers: [...options.brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();

  const pipeline: Pipeline = {
    label: options.label, topic, groupId, logDir, source, target, sourceDatabase, targetDatabase, poller, pollers, consumers, bus, addConsumer,
    terminateServiceSessions: async (which = 'all') => {
      const apps = which === 'poller' ? [APP_POLLER] : which === 'consumer' ? [APP_CONSUMER] : [APP_POLLER, APP_CONSUMER];
      const { rows } = await target.query<{ n: number }>(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = ANY($1) AND application_name = ANY($2)`,
        [[sourceDatabase, targetDatabase], apps]);
      return rows[0]!.n;
    },
    check: () => checkInvariants({ source, target, table }),
    lag: async () => {
      const ends = await admin.fetchTopicOffsets(topic);
      const { rows } = await target.query<{ partition: number; next: string }>(
        `SELECT partition, next_offset::text AS next FROM ${TARGET_SCHEMA}.hw_offsets WHERE group_id = $1 AND topic = $2`, [groupId, topic]);
      const stored = new Map(rows.map((r) => [r.partition, BigInt(r.next)]));
      return ends.reduce((sum, e) => sum + Math.max(0, Number(BigInt(e.high) - (stored.get(e.partition) ?? BigInt(e.low)))), 0);
    },
    close: async (passed) => {
      await Promise.all([...pollers.map((x) => x.stop()), ...consumers.map((c) => c.stop())]);
      await admin.disconnect();
      await source.end();
      await target.end();
      if (!passed) return;
      for (const db of [sourceDatabase, targetDatabase]) await onServer(options.pgServerUrl, `DROP DATABASE IF EXISTS ${quotePg(db)} WITH (FORCE)`).catch(() => undefined);
      const cleanup = new Kafka({ clientId: `${topic}-cleanup`, brokers: [...options.brokers], logLevel: logLevel.NOTHING }).admin();
      await cleanup.connect().then(() => cleanup.deleteTopics({ topics: [topic, retryTopicFor(topic), dlqTopicFor(topic)] })).catch(() => undefined);
      await cleanup.disconnect();
      await rm(logDir, { recursive: true, force: true });
    },
    members: async () => {
      const { groups } = await admin.describeGroups([groupId]);
      return groups[0]?.state === 'Stable' ? groups[0].members.length : 0;
    },
    publishPoison: async (key) => {
      const producer = new Kafka({ clientId: `${topic}-poison`, brokers: [...options.brokers], logLevel: logLevel.NOTHING }).producer();
      await producer.connect();
      try {
        await producer.send({ topic, acks: -1, messages: [{ key, value: Buffer.from('not an avro value'), headers: { [HEADERS.kind]: 'change', [HEADERS.table]: tableName } }] });
      } finally {
        await producer.disconnect();
      }
    },
    deadLetters: async () => {
      const out = await runCapture(['--config', pollConfig, 'dlq', 'list', '--table', tableName, '--limit', '1000', '--json'], env);
      return (JSON.parse(out) as { deadLetters: DeadLetterSeen[] }).deadLetters;
    },
  };
  await warmUp(pipeline, options.consumers ?? 1);
  return pipeline;
}

/** The brokers a service's configuration names; the harness itself always uses `options.brokers`. */
function serviceBrokers(options: PipelineOptions, role: 'poll' | 'consume'): readonly string[] {
  const services = options.serviceBrokers ?? options.brokers;
  return role === 'consume' ? options.consumerBrokers ?? services : services;
}

/**
 * Waits until the processes are up and working before any fault: a warm-up row has gone through the poller and a
 * consumer, and every consumer instance has joined the group. Starting node with tsx takes seconds on a busy
 * machine; a fault injected before that would hit nothing.
 */
async function warmUp(p: Pipeline, consumers: number): Promise<void> {
  await insertRows(p.source, [{ id: randomUUID(), name: 'warm-up', path: '/0/', parent: null, isDirectory: true, content: null, modifiedOnSql: 'clock_timestamp()', bu: p.bus[0]! }]);
  const outcome = await awaitConvergence(p, 180_000);
  if (!outcome.converged) throw new Error(`the pipeline did not start: the warm-up row did not arrive within 180 s (logs in ${p.logDir})`);
  const deadline = Date.now() + 120_000;
  while ((await p.members().catch(() => 0)) !== consumers) {
    if (Date.now() > deadline) throw new Error(`${consumers} consumers did not all join group ${p.groupId} within 120 s (logs in ${p.logDir})`);
    await sleep(500);
  }
}

function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, HIGHWATER_LOG_LEVEL: process.env.HIGHWATER_TEST_CHILD_LOG_LEVEL ?? 'warn' };
  // The configuration file names the brokers and databases; variables of the surrounding shell must not override them.
  for (const k of Object.keys(env)) if (k.startsWith('HIGHWATER_') && k !== 'HIGHWATER_LOG_LEVEL' && k !== 'HIGHWATER_CACHE_DIR') delete env[k];
  return env;
}

/** Runs a highwater command and resolves with its standard output. */
function runCapture(args: string[], env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [BIN, ...args], { cwd: REPO, env, maxBuffer: 64 << 20 }, (error, stdout, stderr) =>
      (error ? reject(new Error(`highwater ${args.join(' ')} failed: ${error.message}\n${stderr.slice(-3000)}`)) : resolve(stdout)));
  });
}

function runOnce(args: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const log = openSync(logFile, 'a');
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO, env, stdio: ['ignore', log, log] });
    closeSync(log);
    child.once('exit', (code) => {
      if (code === 0) resolve();
      else void readFile(logFile, 'utf8').then((out) => reject(new Error(`highwater ${args.join(' ')} exited ${code}:\n${out.slice(-3000)}`)));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Load: inserts, updates and deletes on the source, in small transactions over a stretch of time.

export interface LoadShape {
  readonly steps: number;
  readonly filesPerStep: number;
  readonly updatesPerStep: number;
  readonly deletesPerStep: number;
  readonly pauseMs: number;
}

export const SMALL_LOAD: LoadShape = { steps: 16, filesPerStep: 25, updatesPerStep: 6, deletesPerStep: 2, pauseMs: 400 };

/** Runs the load; `onStep(i)` is awaited after step i (where a scenario injects its fault). */
export async function runLoad(p: Pipeline, rand: () => number, shape: LoadShape, onStep?: (step: number) => Promise<void>): Promise<number> {
  const folders: string[] = [];
  const files: string[] = [];
  let path = 1;
  let written = 0;
  for (let step = 0; step < shape.steps; step++) {
    const rows: Parameters<typeof insertRows>[1][number][] = [];
    if (step % 4 === 0) {
      const folder = `/${path++}/`;
      folders.push(folder);
      rows.push({ id: randomUUID(), name: `folder-${folder}`, path: folder, parent: null, isDirectory: true, content: null, modifiedOnSql: 'clock_timestamp()', bu: p.bus[0]! });
    }
    for (let i = 0; i < shape.filesPerStep; i++) {
      const parent = folders[Math.floor(rand() * folders.length)]!;
      const id = randomUUID();
      files.push(id);
      const size = 100 + Math.floor(rand() * 3000);
      rows.push({ id, name: `file-${path}.bin`, path: `${parent}${path++}/`, parent, isDirectory: false, content: randomBytes(size), modifiedOnSql: 'clock_timestamp()', bu: p.bus[Math.floor(rand() * p.bus.length)]! });
    }
    await withSourceRetry(() => insertRows(p.source, rows));
    written += rows.length;
    await withSourceRetry(() => updateSome(p.source, pick(files, rand, shape.updatesPerStep, false)));
    await withSourceRetry(() => deleteSome(p.source, pick(files, rand, shape.deletesPerStep, true)));
    await onStep?.(step);
    await sleep(shape.pauseMs);
  }
  return written;
}

/** A source write interrupted by a fault of the source server itself is tried again: the load is not the subject. */
async function withSourceRetry(write: () => Promise<void>): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (attempt >= 60) throw err;
      await sleep(1000);
    }
  }
}

function pick(from: string[], rand: () => number, n: number, remove: boolean): string[] {
  const chosen = new Set<string>();
  while (chosen.size < Math.min(n, from.length)) chosen.add(from[Math.floor(rand() * from.length)]!);
  if (remove) for (const id of chosen) from.splice(from.indexOf(id), 1);
  return [...chosen];
}

async function updateSome(pool: pg.Pool, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await pool.query(`UPDATE demo."ReferralAttachment" SET file_stream = file_stream || '\\x2a'::bytea WHERE stream_id = ANY($1::uuid[])`, [ids]);
  await pool.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid = ANY($1::uuid[])`, [ids]);
}

async function deleteSome(pool: pg.Pool, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  await pool.query(`DELETE FROM demo."cw_referralattachmentBase" WHERE cw_referralattachmentid = ANY($1::uuid[])`, [ids]);
  await pool.query(`DELETE FROM demo."ReferralAttachment" WHERE stream_id = ANY($1::uuid[])`, [ids]);
}

// ---------------------------------------------------------------------------------------------------------------
// Convergence (I1–I5)

export interface Outcome {
  readonly converged: boolean;
  /** From the end of the fault and the load to convergence; the bound when it did not converge. */
  readonly recoveryMs: number;
  readonly report: InvariantReport;
  readonly lag: number;
}

/**
 * Waits until I1 and I3 hold and the lag is 0, at most `boundMs` (the I5 bound the scenario states). Services that
 * exited are reported, not restarted: a process that gives up on a transient fault is a finding.
 */
export async function awaitConvergence(p: Pipeline, boundMs: number, since = Date.now()): Promise<Outcome> {
  const deadline = since + boundMs;
  let lag = Number.POSITIVE_INFINITY;
  for (;;) {
    // The harness's own connections may meet the same fault (a restarted server): a failed probe is "not yet".
    lag = await p.lag().catch(() => Number.POSITIVE_INFINITY);
    if (lag === 0) {
      const report = await p.check().catch(() => undefined);
      if (report && report.i1.count === 0 && report.i3.count === 0) return { converged: true, recoveryMs: Date.now() - since, report, lag };
    }
    if (Date.now() > deadline) return { converged: false, recoveryMs: boundMs, report: await p.check(), lag };
    await sleep(1000);
  }
}

/** Whether the outcome satisfies I1–I3 and I5 (I4 is reported, not judged). */
export function verdict(outcome: Outcome): { pass: boolean; why: string } {
  const r = outcome.report;
  const problems: string[] = [];
  if (!outcome.converged) problems.push(`I5: not converged within the bound (lag ${outcome.lag})`);
  if (r.i1.count > 0) problems.push(`I1: ${r.i1.count} rows lost or stale`);
  if ((r.i2?.count ?? 0) > 0) problems.push(`I2: ${r.i2!.count} regressions`);
  if (r.i3.count > 0) problems.push(`I3: ${r.i3.count} phantoms`);
  return { pass: problems.length === 0, why: problems.length === 0 ? 'ok' : `${problems.join('; ')}\n${formatReport(r)}` };
}

/** Exit records of services that died on their own (not stopped by the harness): a finding for the report. */
export function unexpectedExits(p: Pipeline): string[] {
  return [...p.pollers, ...p.consumers].flatMap((s) => s.exits.filter((e) => !e.asked).map((e) => `${s.name} exited by itself (code ${e.code}, signal ${e.signal})`));
}

// ---------------------------------------------------------------------------------------------------------------
// Results table

export interface ScenarioResult {
  readonly scenario: string;
  readonly repetitions: number;
  readonly passed: number;
  readonly duplicates: number;
  /** Longest recovery of the repetitions, ms. */
  readonly recoveryMs: number;
  readonly boundMs: number;
  readonly seed: number;
  readonly notes: string;
}

export function formatTable(results: readonly ScenarioResult[]): string {
  const header = ['scenario', 'reps', 'result', 'duplicates', 'recovery (max)', 'bound', 'seed', 'notes'];
  const rows = results.map((r) => [r.scenario, String(r.repetitions), r.repetitions === 0 ? 'skipped' : r.passed === r.repetitions ? 'pass' : `FAIL ${r.repetitions - r.passed}/${r.repetitions}`,
    String(r.duplicates), `${(r.recoveryMs / 1000).toFixed(1)} s`, `${(r.boundMs / 1000).toFixed(0)} s`, String(r.seed), r.notes]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
