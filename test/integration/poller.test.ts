/**
 * The poller end to end against the real Kafka broker and the local PostgreSQL: a FileTable-like source (the demo's
 * schema, src/dev/demo/sample.ts) in a database of its own, the control store in another, topics named after the test.
 * Events are read back with a plain kafkajs consumer and decoded with the product's codec. Each test owns its
 * databases (kept when it fails), topics and consumer groups.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as delay } from 'node:timers/promises';
import type { IHeaders } from 'kafkajs';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { parseConfigObject } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { HEADERS, type BlobChange, type BlobChunk, type Deletion, type Ticks, type WatermarkMarker } from '../../src/contract.js';
import { createBusinessUnits, insertRows, SOURCE_DDL } from '../../src/dev/demo/sample.js';
import { createCodec } from '../../src/events/codec.js';
import { decodeRecord } from '../../src/events/records.js';
import { createLogger } from '../../src/logger.js';
import { PollerObserver, type PollerListener } from '../../src/poll/observer.js';
import { Poller, type RunSummary } from '../../src/poll/poller.js';
import type { SourceConnector } from '../../src/poll/source/connector.js';
import { floorToMicrosecond, isoFromTicks, ticksFromIso, TICKS_PER_MINUTE } from '../../src/time/ticks.js';
import { Runtime } from '../../src/wiring.js';
import { brokers, consumeMessages, uniqueName, withAdmin } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed, type TestDatabase } from '../support/pg.js';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const CONTROL_SCHEMA = 'hwc';
const TABLE = 'ReferralAttachment';
const MiB = 1 << 20;
const codec = createCodec({ kind: 'single-object' });
const LOG_LEVEL = process.env.HW_TEST_LOG_LEVEL ?? 'silent';

// ---------------------------------------------------------------------------------------------------------------
// Fixture: source and control databases, a topic, a configuration

type SampleRow = Parameters<typeof insertRows>[1][number];

interface Fixture {
  readonly source: TestDatabase;
  readonly control: TestDatabase;
  /** Pools for assertions and set-up (the poller has its own). */
  readonly src: pg.Pool;
  readonly ctl: pg.Pool;
  readonly topic: string;
  /** The raw configuration object (written to YAML for the CLI, parsed for in-process runs). */
  readonly raw: Record<string, unknown>;
  readonly config: Config;
  readonly bus: string[];
  /** A Runtime closed when the test ends. */
  runtime(config?: Config): Runtime;
  /** A poll run in this process, with the store migrated. */
  poll(options?: { config?: Config; tables?: string[] }): Promise<RunSummary>;
}

interface FixtureOptions {
  readonly table?: Record<string, unknown>;
  readonly extraTables?: (topicFor: (suffix: string) => string) => Record<string, unknown>[];
  readonly root?: Record<string, unknown>;
  readonly buCount?: number;
}

function tableConfig(topic: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: TABLE,
    source: 'source',
    blob: { schema: 'demo', table: 'ReferralAttachment' },
    metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
    businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
    safetyBufferMinutes: 0,
    batchSize: 20,
    topic,
    ...over,
  };
}

async function fixture(label: string, options: FixtureOptions = {}): Promise<Fixture> {
  const source = await createTestDatabase(`poller ${label} src`);
  dropWhenPassed(source);
  const control = await createTestDatabase(`poller ${label} ctl`);
  dropWhenPassed(control);
  const topic = uniqueName(`poller ${label}`, 'topic');
  const topics = [topic];
  const topicFor = (suffix: string) => {
    const t = uniqueName(`poller ${label}`, suffix);
    topics.push(t);
    return t;
  };
  const extra = options.extraTables?.(topicFor) ?? [];
  deleteExistingTopicsWhenPassed(topics.flatMap((t) => [t, `${t}.retry`, `${t}.dlq`]));
  const src = source.pool();
  await src.query(SOURCE_DDL);
  const bus = await createBusinessUnits(src, options.buCount ?? 2);
  const raw: Record<string, unknown> = {
    controlStore: { database: 'control', schema: CONTROL_SCHEMA },
    kafka: { brokers: brokers(), partitions: 3, clientId: 'hw-poller-test' },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: source.url, tenant: 'gwent' },
      { name: 'control', kind: 'postgres', connectionString: control.url },
    ],
    tables: [tableConfig(topic, options.table), ...extra],
    poll: { leaseSeconds: 60 },
    log: { level: 'warn' },
    ...options.root,
  };
  const config = parseConfigObject(raw, `test ${label}`);
  const runtimes: Runtime[] = [];
  // Registered after the databases and topics, so it runs before they are dropped (hooks run in reverse order).
  onTestFinished(async () => {
    await Promise.allSettled(runtimes.map((r) => r.close()));
  });
  const runtime = (cfg: Config = config) => {
    const rt = new Runtime(cfg, createLogger({ level: LOG_LEVEL }));
    runtimes.push(rt);
    return rt;
  };
  let shared: Runtime | undefined;
  return {
    source, control, src, ctl: control.pool(), topic, raw, config, bus, runtime,
    poll: async ({ config: cfg, tables } = {}) => {
      const rt = cfg ? runtime(cfg) : (shared ??= runtime());
      await rt.store().migrate();
      const poller = await rt.poller();
      return poller.run({ requestedBy: 'test', ...(tables ? { tables } : {}) });
    },
  };
}

/** Deletes those of the topics that exist when the test passed (a run that failed early never created them). */
function deleteExistingTopicsWhenPassed(names: readonly string[]): void {
  onTestFinished(async ({ task }) => {
    if (task.result?.state !== 'pass') return;
    await withAdmin(async (admin) => {
      const existing = new Set(await admin.listTopics());
      const topics = names.filter((n) => existing.has(n));
      if (topics.length > 0) await admin.deleteTopics({ topics });
    });
  });
}

/** A row of the sample schema; ModifiedOn is an SQL expression of the test's own. */
function sampleRow(over: Partial<SampleRow> & { path: string; bu: string }): SampleRow {
  const id = over.id ?? randomUUID();
  return { id, name: `f-${id.slice(0, 8)}`, parent: null, isDirectory: false, content: randomBytes(64), modifiedOnSql: `clock_timestamp() - interval '1 hour'`, ...over };
}

/** A timestamptz literal for exact ticks (microseconds: what PostgreSQL holds). */
function tsLiteral(ticks: Ticks): string {
  return `timestamptz '${isoFromTicks(floorToMicrosecond(ticks), 6)}'`;
}

async function insertOne(client: pg.ClientBase, row: SampleRow): Promise<void> {
  await client.query(`INSERT INTO demo."ReferralAttachment" (stream_id, file_stream, name, path_locator, parent_path_locator, is_directory) VALUES ($1, $2, $3, $4, $5, $6)`,
    [row.id, row.content, row.name, row.path, row.parent, row.isDirectory]);
  await client.query(`INSERT INTO demo."cw_referralattachmentBase" (cw_referralattachmentid, "ModifiedOn", "OwningBusinessUnit") VALUES ($1, ${row.modifiedOnSql}, $2)`, [row.id, row.bu]);
}

async function sourceTicks(src: pg.Pool): Promise<Map<string, bigint>> {
  const { rows } = await src.query<{ key: string; ticks: string }>(
    `SELECT cw_referralattachmentid::text AS key, (extract(epoch from "ModifiedOn") * 10000000)::bigint::text AS ticks FROM demo."cw_referralattachmentBase"`);
  return new Map(rows.map((r) => [r.key, BigInt(r.ticks)]));
}

async function one<T extends pg.QueryResultRow>(pool: pg.Pool, text: string, values: unknown[] = []): Promise<T> {
  const { rows } = await pool.query<T>(text, values);
  expect(rows).toHaveLength(1);
  return rows[0]!;
}

async function runTable(ctl: pg.Pool, runId: string): Promise<Record<string, unknown>> {
  return one(ctl, `SELECT *, window_start_ticks::text AS ws, window_end_ticks::text AS we FROM ${CONTROL_SCHEMA}.run_tables WHERE run_id = $1`, [runId]);
}

async function batches(ctl: pg.Pool, runId: string): Promise<{ step: string; batch_no: number; rows: number; rows_skipped: number; rows_failed: number; finished_at: Date }[]> {
  const { rows } = await ctl.query(`SELECT step, batch_no, rows, rows_skipped, rows_failed, finished_at FROM ${CONTROL_SCHEMA}.run_batches WHERE run_id = $1 ORDER BY finished_at, batch_no`, [runId]);
  return rows;
}

function completed(summary: RunSummary) {
  expect(summary.tables.map((t) => t.error ?? null)).toEqual(summary.tables.map(() => null));
  expect(summary.status).toBe('completed');
  return summary.tables[0]!.outcome!;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a topic back

interface Read {
  readonly partition: number;
  readonly offset: bigint;
  readonly key: string;
  readonly headers: Record<string, string>;
  readonly value: Buffer | null;
  readonly event:
    | { type: 'change'; change: BlobChange }
    | { type: 'chunk'; chunk: BlobChunk }
    | { type: 'marker'; marker: WatermarkMarker }
    | { type: 'delete'; deletion: Deletion }
    | { type: 'chunk-tombstone' };
}

function headerText(headers: IHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined) out[k] = first.toString();
  }
  return out;
}

/** Every record of the topic up to its current end, decoded. */
async function readTopic(topic: string): Promise<Read[]> {
  const offsets = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  const total = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  if (total === 0) return [];
  const messages = await consumeMessages({ topic, groupId: uniqueName('poller-reader', topic.slice(-20)), count: total, timeoutMs: 60_000 });
  const out: Read[] = [];
  for (const m of messages) {
    const headers = headerText(m.headers);
    const event = await decodeRecord(codec, { topic, partition: m.partition, offset: BigInt(m.offset), key: m.key, value: m.value, headers });
    out.push({ partition: m.partition, offset: BigInt(m.offset), key: m.key?.toString('utf8') ?? '', headers, value: m.value, event: event as Read['event'] });
  }
  return out;
}

function changes(records: readonly Read[]): (BlobChange & { partition: number; offset: bigint; headers: Record<string, string> })[] {
  return records.flatMap((r) => (r.event.type === 'change' ? [{ ...r.event.change, partition: r.partition, offset: r.offset, headers: r.headers }] : []));
}

function keysOf(list: readonly { key: string }[]): string[] {
  return [...new Set(list.map((c) => c.key))].sort();
}

// ---------------------------------------------------------------------------------------------------------------
// The CLI as a child process

interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('HIGHWATER_')) env[k] = v;
  return { ...env, ...extra };
}

function startCli(args: string[], extraEnv: Record<string, string> = {}): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, ['src/cli/bin.js', ...args], { cwd: REPO, env: cliEnv(extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  onTestFinished(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, done };
}

async function writeConfigFile(raw: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'hw-poller-test-'));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'highwater.yaml');
  // JSON is YAML.
  await writeFile(file, JSON.stringify(raw, null, 2));
  return file;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(everyMs);
  }
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** The real source with some of its reads replaced; each replacement gets the real source to delegate to. */
function sourceWith(real: SourceConnector, overrides: { [K in keyof SourceConnector]?: SourceConnector[K] extends (...args: infer A) => infer R ? (real: SourceConnector, ...args: A) => R : never }): SourceConnector {
  return new Proxy(real, {
    get(target, prop, receiver) {
      const override = (overrides as Record<PropertyKey, ((real: SourceConnector, ...args: unknown[]) => unknown) | undefined>)[prop];
      if (override !== undefined) return (...args: unknown[]) => override(target, ...args);
      const value: unknown = Reflect.get(target, prop, receiver);
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/** A source whose clock() waits for `gate`: a poller that holds the lease stays inside its window planning. */
function gatedSource(real: SourceConnector, gate: Promise<void>): SourceConnector {
  return {
    kind: real.kind,
    clock: async () => {
      await gate;
      return real.clock();
    },
    oldestOpenTransaction: () => real.oldestOpenTransaction(),
    readPage: (r) => real.readPage(r),
    readReferencedParents: (r) => real.readReferencedParents(r),
    readMissingParentsPage: (r) => real.readMissingParentsPage(r),
    readByKeys: (k) => real.readByKeys(k),
    readByPathLocators: (p) => real.readByPathLocators(p),
    readContentSlice: (k, o, l) => real.readContentSlice(k, o, l),
    readContents: (k) => real.readContents(k),
    readKeyStates: (r) => real.readKeyStates(r),
    readNullModifiedOnPage: (r) => real.readNullModifiedOnPage(r),
    countWindow: (r) => real.countWindow(r),
    countNullModifiedOn: (s) => real.countNullModifiedOn(s),
    memberKeys: (r) => real.memberKeys(r),
    contentHashes: (k) => real.contentHashes(k),
    close: () => real.close(),
  };
}

async function pollerWith(rt: Runtime, source: SourceConnector, listeners: PollerListener[] = []): Promise<Poller> {
  await rt.store().migrate();
  return new Poller({
    config: rt.config,
    store: rt.store(),
    publisher: await rt.publisher(),
    codec: rt.codec,
    logger: rt.logger,
    observer: new PollerObserver(listeners),
    sourceFor: () => source,
    ensureTopics: (t) => rt.ensureTableTopics(t),
  });
}

// ---------------------------------------------------------------------------------------------------------------

describe('poller', () => {
  it('publishes every one of 5,000 rows sharing one ModifiedOn after a kill -9 mid-run and a resume (duplicates only)', async () => {
    const fx = await fixture('kill resume', { table: { batchSize: 1000 }, root: { poll: { leaseSeconds: 10 } } });
    const sameInstant = `timestamptz '2026-01-01 12:00:00.123456+00'`;
    const rows = Array.from({ length: 5000 }, (_, i) => sampleRow({ path: `/${i + 1}/`, bu: fx.bus[i % 2]!, content: randomBytes(4096), modifiedOnSql: sameInstant }));
    await insertRows(fx.src, rows);
    const configFile = await writeConfigFile(fx.raw);

    const poll = startCli(['poll', '--config', configFile]);
    const completedBatches = await waitFor('two completed batches', async () => {
      const n = await fx.ctl.query(`SELECT count(*)::int AS n FROM ${CONTROL_SCHEMA}.run_batches WHERE status = 'completed'`)
        .then((r) => r.rows[0].n as number, () => 0);
      return n >= 2 ? n : undefined;
    });
    poll.child.kill('SIGKILL');
    const killed = await poll.done;
    expect(killed.signal, `the poll ended by itself before the kill:\n${killed.stdout}\n${killed.stderr}`).toBe('SIGKILL');
    expect(completedBatches).toBeGreaterThanOrEqual(2);

    const run = await one<{ run_id: string; status: string }>(fx.ctl, `SELECT run_id::text, status FROM ${CONTROL_SCHEMA}.runs`);
    expect(run.status).toBe('running');
    const before = await batches(fx.ctl, run.run_id);
    expect(before.every((b) => b.step === 'roots')).toBe(true);
    expect(before.length).toBeLessThan(5);

    // The dead process still holds the lease; a new process may take it only once it expired (database clock).
    await waitFor('the lease to expire', async () => {
      const { rows: w } = await fx.ctl.query(`SELECT lease_owner IS NULL OR lease_expires_at < clock_timestamp() AS free FROM ${CONTROL_SCHEMA}.watermarks`);
      return w[0]?.free === true ? true : undefined;
    }, 30_000, 250);

    const resumed = await startCli(['resume', run.run_id, '--config', configFile]).done;
    expect(resumed.code, resumed.stderr + resumed.stdout).toBe(0);
    expect((await one<{ status: string }>(fx.ctl, `SELECT status FROM ${CONTROL_SCHEMA}.runs WHERE run_id = $1`, [run.run_id])).status).toBe('completed');

    const published = changes(await readTopic(fx.topic));
    const keys = keysOf(published);
    expect(keys).toEqual(rows.map((r) => r.id).sort());
    expect(published.length).toBeGreaterThanOrEqual(5000);
    const after = await batches(fx.ctl, run.run_id);
    expect(after.filter((b) => b.step === 'roots').reduce((n, b) => n + b.rows + b.rows_skipped, 0)).toBeGreaterThanOrEqual(5000);
    console.log(`[poller test] kill/resume: ${published.length - 5000} duplicate events for 5000 rows; ${before.length} batches before the kill`);
  });

  it('publishes a row committed late with a ModifiedOn inside the previous window overlap', async () => {
    const fx = await fixture('late commit', { table: { safetyBufferMinutes: 10 } });
    const early = sampleRow({ path: '/1/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '30 minutes'` });
    await insertRows(fx.src, [early]);
    const first = completed(await fx.poll());
    expect(first.published).toBe(1);

    // Written 5 minutes before the first window's end, committed after that window was read.
    const lateTicks = first.window.end - 5n * TICKS_PER_MINUTE;
    const late = sampleRow({ path: '/2/', bu: fx.bus[0]!, modifiedOnSql: tsLiteral(lateTicks) });
    await insertRows(fx.src, [late]);

    const secondRun = await fx.poll();
    const second = completed(secondRun);
    expect(second.window.start).toBe(first.window.end - 10n * TICKS_PER_MINUTE);
    expect(second.window.start < lateTicks && lateTicks <= first.window.end).toBe(true);
    expect(second.published).toBe(1);
    const events = changes(await readTopic(fx.topic));
    const lateEvent = events.find((e) => e.key === late.id);
    expect(lateEvent?.runId).toBe(secondRun.runId);
    expect(lateEvent?.modifiedOn).toBe(floorToMicrosecond(lateTicks));
    expect(keysOf(events)).toEqual([early.id, late.id].sort());
  });

  it('detects a row committed later than the safety buffer covers, reports it and publishes it (R12, beyond)', async () => {
    const fx = await fixture('beyond buffer', { table: { safetyBufferMinutes: 10 } });
    const early = sampleRow({ path: '/1/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '30 minutes'` });
    await insertRows(fx.src, [early]);
    const first = completed(await fx.poll());

    // Stamped 20 minutes before the first window's end, committed after it: older than the next window's start.
    const lateTicks = first.window.end - 20n * TICKS_PER_MINUTE;
    const late = sampleRow({ path: '/2/', bu: fx.bus[0]!, modifiedOnSql: tsLiteral(lateTicks) });
    await insertRows(fx.src, [late]);

    const secondRun = await fx.poll();
    const second = completed(secondRun);
    expect(lateTicks <= second.window.start).toBe(true);
    expect(second.lateArrivals).toBe(1);
    const steps = await batches(fx.ctl, secondRun.runId);
    expect(steps.filter((b) => b.step === 'late-arrivals').map((b) => b.rows)).toEqual([1]);
    const lateEvent = changes(await readTopic(fx.topic)).find((e) => e.key === late.id);
    expect(lateEvent?.runId).toBe(secondRun.runId);

    // Found once: the next sweep sees the registered version and republishes nothing.
    expect(completed(await fx.poll()).lateArrivals).toBe(0);
  });

  it('holds the window end back before an open transaction, and publishes its row once committed', async () => {
    const fx = await fixture('open tx');
    const before = sampleRow({ path: '/1/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '1 minute'` });
    await insertRows(fx.src, [before]);
    const open = new pg.Client({ connectionString: fx.source.url });
    await open.connect();
    onTestFinished(() => open.end());
    await open.query('BEGIN');
    const pending = sampleRow({ path: '/2/', bu: fx.bus[0]!, modifiedOnSql: 'now()' });
    await insertOne(open, pending);
    const txStart = BigInt((await open.query<{ t: string }>(`SELECT (extract(epoch from now()) * 10000000)::bigint::text AS t`)).rows[0]!.t);

    const firstRun = await fx.poll();
    const first = completed(firstRun);
    expect(first.window.end).toBeLessThan(txStart);
    const firstTable = await runTable(fx.ctl, firstRun.runId);
    expect(firstTable).toMatchObject({ end_clamped_by: 'oldest-open-transaction', oldest_tx_visible: true, rows_published: '1' });
    expect(BigInt(firstTable.we as string)).toBe(txStart - 1n);
    expect(keysOf(changes(await readTopic(fx.topic)))).toEqual([before.id]);

    await open.query('COMMIT');
    const secondRun = await fx.poll();
    const second = completed(secondRun);
    expect(second.window.end).toBeGreaterThanOrEqual(txStart);
    expect(second.published).toBe(1);
    const events = changes(await readTopic(fx.topic));
    expect(keysOf(events)).toEqual([before.id, pending.id].sort());
    expect(events.find((e) => e.key === pending.id)).toMatchObject({ runId: secondRun.runId, modifiedOn: txStart });
  });

  it('lets only one of two racing pollers hold the lease, and takes an expired lease over', async () => {
    const fx = await fixture('lease race');
    await insertRows(fx.src, [sampleRow({ path: '/1/', bu: fx.bus[0]! }), sampleRow({ path: '/2/', bu: fx.bus[1]! })]);
    const [rtA, rtB] = [fx.runtime(), fx.runtime()];
    await rtA.ensureTableTopics(fx.config.tables[0]!);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => { open = resolve; });
    const failures: { code: unknown; message: string }[] = [];
    const listener: PollerListener = { tableFailed: ({ error }) => failures.push({ code: (error as { code?: unknown }).code, message: error.message }) };
    const [pollerA, pollerB] = [
      await pollerWith(rtA, gatedSource(await rtA.source(fx.config.tables[0]!), gate), [listener]),
      await pollerWith(rtB, gatedSource(await rtB.source(fx.config.tables[0]!), gate), [listener]),
    ];

    // Both start at once; whoever wins the lease waits at the gate while holding it, so the other must be refused.
    const runs = [pollerA.run(), pollerB.run()];
    const loser = await Promise.race(runs);
    open();
    const both = await Promise.all(runs);
    expect(both.map((s) => s.status).sort()).toEqual(['completed', 'failed']);
    expect(loser.status).toBe('failed');
    const winner = both.find((s) => s.status === 'completed')!;
    expect(loser.tables[0]!.error).toMatch(new RegExp(`table ${TABLE} \\(scope \\*\\) is leased by `));
    expect(failures).toEqual([{ code: 'LEASE_HELD', message: loser.tables[0]!.error }]);
    const loserRun = await one<{ status: string; error: string }>(fx.ctl, `SELECT status, error FROM ${CONTROL_SCHEMA}.runs WHERE run_id = $1`, [loser.runId]);
    expect(loserRun.status).toBe('failed');
    expect(loserRun.error).toContain(`${TABLE}: table ${TABLE} (scope *) is leased by`);
    expect(keysOf(changes(await readTopic(fx.topic)))).toHaveLength(2);
    const watermark = await one<{ last_run_id: string; lease_owner: string | null; hw: string }>(fx.ctl,
      `SELECT last_run_id::text, lease_owner, high_water_ticks::text AS hw FROM ${CONTROL_SCHEMA}.watermarks`);
    expect(watermark).toMatchObject({ last_run_id: winner.runId, lease_owner: null });

    // A lease held by someone else and not expired blocks; the high-watermark stays.
    await fx.ctl.query(`UPDATE ${CONTROL_SCHEMA}.watermarks SET lease_owner = 'elsewhere:1:live', lease_expires_at = clock_timestamp() + interval '1 hour'`);
    const blocked = await fx.poll();
    expect(blocked.status).toBe('failed');
    expect(blocked.tables[0]!.error).toContain('is leased by elsewhere:1:live');

    // The same lease, expired by the database clock, is taken over.
    await fx.ctl.query(`UPDATE ${CONTROL_SCHEMA}.watermarks SET lease_owner = 'crashed:1:dead', lease_expires_at = clock_timestamp() - interval '1 minute'`);
    const takeover = await fx.poll();
    completed(takeover);
    const after = await one<{ last_run_id: string; lease_owner: string | null; hw: string }>(fx.ctl,
      `SELECT last_run_id::text, lease_owner, high_water_ticks::text AS hw FROM ${CONTROL_SCHEMA}.watermarks`);
    expect(after.last_run_id).toBe(takeover.runId);
    expect(after.lease_owner).toBeNull();
    expect(BigInt(after.hw)).toBeGreaterThan(BigInt(watermark.hw));
  });

  it('publishes nothing on a second run over unchanged data and reports the skips', async () => {
    const fx = await fixture('unchanged', { table: { safetyBufferMinutes: 60, batchSize: 7 } });
    const folder = sampleRow({ path: '/1/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '100 minutes'` });
    const files = Array.from({ length: 20 }, (_, i) => sampleRow({ path: `/1/${i + 1}/`, parent: '/1/', bu: fx.bus[i % 2]!, modifiedOnSql: `clock_timestamp() - interval '90 minutes'` }));
    const roots = Array.from({ length: 5 }, (_, i) => sampleRow({ path: `/${i + 2}/`, bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '95 minutes'` }));
    await insertRows(fx.src, [folder, ...files, ...roots]);

    const firstRun = await fx.poll();
    const firstRunId = firstRun.runId;
    const first = completed(firstRun);
    expect(first.published).toBe(26);
    const secondRun = await fx.poll();
    const second = completed(secondRun);
    expect(second.window.start).toBe(first.window.end - 60n * TICKS_PER_MINUTE);
    expect(second.published).toBe(0);
    // Every row is read again in the overlap and skipped; the folder once more as the children's parent.
    expect(second.skipped).toBe(27);
    expect(await runTable(fx.ctl, secondRun.runId)).toMatchObject({ rows_published: '0', rows_skipped_unchanged: '27', bytes_published: '0', status: 'completed' });
    const secondBatches = await batches(fx.ctl, secondRun.runId);
    expect(secondBatches.every((b) => b.rows === 0)).toBe(true);
    expect(secondBatches.reduce((n, b) => n + b.rows_skipped, 0)).toBe(27);
    const records = await readTopic(fx.topic);
    expect(changes(records)).toHaveLength(26);
    // After each run, a marker with the new high-watermark on every partition, after that run's events there.
    const markers = records.flatMap((r) => (r.event.type === 'marker' ? [{ ...r.event.marker, at: r.partition, offset: r.offset }] : []));
    expect(markers.map((m) => [m.runId, m.partition, m.at, m.watermark]).sort()).toEqual(
      [first, second].flatMap((o, i) => [0, 1, 2].map((p) => [i === 0 ? firstRunId : secondRun.runId, p, p, o.window.end])).sort());
    for (const c of changes(records)) {
      const marker = markers.find((m) => m.runId === firstRunId && m.at === c.partition)!;
      expect(c.offset).toBeLessThan(marker.offset);
    }
  });

  it('publishes a parent older than the window before its children (missing-parents step)', async () => {
    const fx = await fixture('missing parents', { table: { batchSize: 4 } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: 4, initialBaseline: t })] }, 'missing parents');
    const oldParent = sampleRow({ path: '/1/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '2 days'` });
    const children = Array.from({ length: 9 }, (_, i) => sampleRow({ path: `/1/${i + 1}/`, parent: '/1/', bu: fx.bus[i % 2]!, modifiedOnSql: `clock_timestamp() - interval '1 hour'` }));
    const newRoot = sampleRow({ path: '/2/', bu: fx.bus[1]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '2 hours'` });
    const newChild = sampleRow({ path: '/2/1/', parent: '/2/', bu: fx.bus[1]!, modifiedOnSql: `clock_timestamp() - interval '1 hour'` });
    await insertRows(fx.src, [oldParent, ...children, newRoot, newChild]);

    const run = await fx.poll({ config });
    const outcome = completed(run);
    const events = changes(await readTopic(fx.topic));
    expect(events).toHaveLength(12);
    const parentEvent = events.find((e) => e.key === oldParent.id)!;
    expect(parentEvent.modifiedOn).toBeLessThan(outcome.window.start);

    const steps = await batches(fx.ctl, run.runId);
    expect(steps.map((b) => [b.step, b.batch_no, b.rows, b.rows_skipped])).toEqual([
      ['roots', 1, 1, 0],
      ['missing-parents', 1, 1, 1],
      ['children', 1, 4, 0],
      ['children', 2, 4, 0],
      ['children', 3, 2, 0],
    ]);
    // The missing-parents batch was acknowledged and recorded before the first children batch was read.
    expect(steps[1]!.finished_at.getTime()).toBeLessThanOrEqual(steps[2]!.finished_at.getTime());
    // Within a partition, order is the log's order: the parent precedes each of its children there.
    let samePartition = 0;
    for (const child of children) {
      const c = events.find((e) => e.key === child.id)!;
      if (c.partition !== parentEvent.partition) continue;
      samePartition++;
      expect(parentEvent.offset).toBeLessThan(c.offset);
    }
    const rootEvent = events.find((e) => e.key === newRoot.id)!;
    const newChildEvent = events.find((e) => e.key === newChild.id)!;
    if (rootEvent.partition === newChildEvent.partition) expect(rootEvent.offset).toBeLessThan(newChildEvent.offset);
    console.log(`[poller test] missing parents: ${samePartition} of ${children.length} children share the parent's partition`);
  });

  // The missing-parents step lists the parents of the window's children once, then pages them. Here the parent
  // paged last is referenced only by the window's last child (a listing cut at a page of children would miss it),
  // and the run fails after the step's first page and is resumed inside the step: the resumed step lists them again
  // and goes on from its checkpoint. Every parent comes from that step: the children step never has to read one by
  // its path (its ancestor lookup, which would hide a parent missing from the listing).
  it('publishes every parent the window\'s children reference in the missing-parents step, also when resumed inside it', async () => {
    const fx = await fixture('parents listed', { table: { batchSize: 2 } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: 2, initialBaseline: t })] }, 'parents listed');
    // Five folders older than the window, paged in this order (their own ModifiedOn).
    const folders = Array.from({ length: 5 }, (_, i) => sampleRow({ path: `/${i + 1}/`, bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '${3 * 24 - i} hours'` }));
    // Ten children of the first four folders in the window, then the last folder's only child, the window's newest row.
    const children = Array.from({ length: 10 }, (_, i) => sampleRow({ path: `/${(i % 4) + 1}/${i + 1}/`, parent: `/${(i % 4) + 1}/`, bu: fx.bus[i % 2]!, modifiedOnSql: `clock_timestamp() - interval '${120 - i} minutes'` }));
    const last = sampleRow({ path: '/5/1/', parent: '/5/', bu: fx.bus[1]!, modifiedOnSql: `clock_timestamp() - interval '10 minutes'` });
    await insertRows(fx.src, [...folders, ...children, last]);

    const rt = fx.runtime(config);
    const real = await rt.source(config.tables[0]!);
    let parentReads = 0;
    let byPath = 0;
    const failing = sourceWith(real, {
      readMissingParentsPage: (r, request) => {
        if (++parentReads === 2) return Promise.reject(new Error('the source went away (test)'));
        return r.readMissingParentsPage(request);
      },
      readByPathLocators: (r, paths) => {
        byPath++;
        return r.readByPathLocators(paths);
      },
    });
    const failed = await (await pollerWith(rt, failing)).run({ requestedBy: 'test' });
    expect(failed.status).toBe('failed');
    const before = await batches(fx.ctl, failed.runId);
    expect(before.map((b) => [b.step, b.batch_no, b.rows])).toEqual([['missing-parents', 1, 2]]);

    const resumed = await (await pollerWith(rt, failing)).resume(failed.runId);
    completed(resumed);
    expect(byPath, 'no parent was left to the children step').toBe(0);
    const steps = await batches(fx.ctl, failed.runId);
    expect(steps.filter((b) => b.step === 'missing-parents').map((b) => [b.batch_no, b.rows])).toEqual([[1, 2], [2, 2], [3, 1]]);
    expect(steps.filter((b) => b.step === 'children').reduce((n, b) => n + b.rows, 0)).toBe(11);
    const events = changes(await readTopic(fx.topic));
    expect(keysOf(events)).toEqual([...folders, ...children, last].map((r) => r.id).sort());
    for (const f of folders) expect(events.filter((e) => e.key === f.id)).toHaveLength(1);
    const parentEvent = events.find((e) => e.key === folders[4]!.id)!;
    const childEvent = events.find((e) => e.key === last.id)!;
    if (parentEvent.partition === childEvent.partition) expect(parentEvent.offset).toBeLessThan(childEvent.offset);
  });

  // The children step reads again the folders the missing-parents step published (they are children too). Unchanged,
  // they are skipped without a pending registration (it would change nothing in their entries); one renamed in
  // between, with the same ModifiedOn, is published again, registered before its send like any changed row.
  it('skips the folders the missing-parents step published without registering them again, and republishes one changed since', async () => {
    const fx = await fixture('folders again', { table: { batchSize: 3 } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: 3, initialBaseline: t })] }, 'folders again');
    const root = sampleRow({ path: '/9/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '3 days'` });
    const folders = Array.from({ length: 4 }, (_, i) => sampleRow({ path: `/9/${i + 1}/`, parent: '/9/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '${200 - i} minutes'` }));
    const files = Array.from({ length: 8 }, (_, i) => sampleRow({ path: `/9/${(i % 4) + 1}/${i + 1}/`, parent: `/9/${(i % 4) + 1}/`, bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '${100 - i} minutes'` }));
    await insertRows(fx.src, [root, ...folders, ...files]);
    const renamed = folders[2]!;

    const rt = fx.runtime(config);
    const store = rt.store();
    const registered: string[] = [];
    const registerPending = store.registerPending.bind(store);
    store.registerPending = (table, runId, rows) => {
      registered.push(...rows.map((r) => r.key));
      return registerPending(table, runId, rows);
    };
    const real = await rt.source(config.tables[0]!);
    let renamedAt: number | null = null;
    const source = sourceWith(real, {
      readPage: async (r, request) => {
        if (request.step === 'children' && renamedAt === null) {
          renamedAt = registered.length;
          await fx.src.query(`UPDATE demo."ReferralAttachment" SET name = 'renamed' WHERE stream_id = $1`, [renamed.id]);
        }
        return r.readPage(request);
      },
    });
    const run = await (await pollerWith(rt, source)).run({ requestedBy: 'test' });
    completed(run);
    expect(renamedAt).not.toBeNull();
    // In the children step, the renamed folder only: the others are the versions the registry holds.
    expect(registered.slice(renamedAt!)).toEqual([renamed.id]);
    const events = changes(await readTopic(fx.topic));
    expect(events.filter((e) => e.key === renamed.id).map((e) => e.name)).toEqual([renamed.name, 'renamed']);
    for (const f of folders.filter((f) => f !== renamed)) expect(events.filter((e) => e.key === f.id)).toHaveLength(1);
    expect(keysOf(events)).toEqual([root, ...folders, ...files].map((r) => r.id).sort());
    const steps = await batches(fx.ctl, run.runId);
    expect(steps.filter((b) => b.step === 'children').reduce((n, b) => n + b.rows_skipped, 0)).toBe(3);
  });

  it('publishes every unpublished ancestor, root first, before a child whose chain is older than the window', async () => {
    const fx = await fixture('ancestors', { table: { batchSize: 10 } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: 10, initialBaseline: t })] }, 'ancestors');
    const old = `clock_timestamp() - interval '3 days'`;
    const root = sampleRow({ path: '/7/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: old });
    const folder = sampleRow({ path: '/7/1/', parent: '/7/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: old });
    const sub = sampleRow({ path: '/7/1/1/', parent: '/7/1/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: old });
    const file = sampleRow({ path: '/7/1/1/1/', parent: '/7/1/1/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '1 hour'` });
    await insertRows(fx.src, [root, folder, sub, file]);

    completed(await fx.poll({ config }));
    const events = changes(await readTopic(fx.topic));
    expect(keysOf(events).sort()).toEqual([root.id, folder.id, sub.id, file.id].sort());
    // All four keys hash anywhere; within each partition an ancestor must precede its descendants.
    const chain = [root, folder, sub, file].map((r) => events.find((e) => e.key === r.id)!);
    for (let i = 0; i < chain.length; i++) {
      for (let j = i + 1; j < chain.length; j++) {
        if (chain[i]!.partition === chain[j]!.partition) expect(chain[i]!.offset).toBeLessThan(chain[j]!.offset);
      }
    }
  });

  it('goes on past a row whose exact version an earlier page sent as an ancestor, without waiting for that page\'s checkpoint', async () => {
    const fx = await fixture('in flight', { table: { batchSize: 2 } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: 2, initialBaseline: t })] }, 'in flight');
    // Missing parents in ModifiedOn order: root (before the window, so the roots step has nothing), sub, folder, other.
    // Page 1 is [root, sub]: sub's parent folder goes with it as an ancestor. Page 2 is [folder, other]: folder is
    // exactly the version in flight.
    const root = sampleRow({ path: '/3/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '3 days'` });
    const folder = sampleRow({ path: '/3/1/', parent: '/3/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '1 hour'` });
    const sub = sampleRow({ path: '/3/1/1/', parent: '/3/1/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '2 hours'` });
    const other = sampleRow({ path: '/3/2/', parent: '/3/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '30 minutes'` });
    const files = [sampleRow({ path: '/3/1/1/1/', parent: '/3/1/1/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '10 minutes'` }),
      sampleRow({ path: '/3/2/1/', parent: '/3/2/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '10 minutes'` })];
    await insertRows(fx.src, [root, folder, sub, other, ...files]);

    const rt = fx.runtime(config);
    await rt.store().migrate();
    // No checkpoint can be written while this transaction holds the batch table: page 1 stays in flight.
    const blocker = await fx.ctl.connect();
    let blocked = true;
    const unblock = async () => {
      if (!blocked) return;
      blocked = false;
      await blocker.query('COMMIT');
      blocker.release();
    };
    onTestFinished(unblock);
    await blocker.query(`BEGIN; LOCK TABLE ${CONTROL_SCHEMA}.run_batches IN EXCLUSIVE MODE`);
    const running = (await rt.poller()).run({ requestedBy: 'test' });
    running.catch(() => undefined);
    // Page 2 is prepared (its new key registered before its send: in the registry, or in a pending send when the
    // registry did not hold it) while page 1's checkpoint waits.
    let registered = false;
    for (let i = 0; i < 300 && !registered; i++) {
      const { rows } = await fx.ctl.query(`SELECT 1 FROM ${CONTROL_SCHEMA}.published WHERE key = $1
        UNION ALL SELECT 1 FROM ${CONTROL_SCHEMA}.pending_sends WHERE $1 = ANY(keys)`, [other.id]);
      registered = rows.length > 0;
      if (!registered) await delay(100);
    }
    await unblock();
    const run = await running;
    expect(registered).toBe(true);
    completed(run);
    const events = changes(await readTopic(fx.topic));
    expect(keysOf(events)).toEqual([root, folder, sub, other, ...files].map((r) => r.id).sort());
    expect(events.filter((e) => e.key === folder.id)).toHaveLength(1);
    const steps = await batches(fx.ctl, run.runId);
    expect(steps.filter((b) => b.step === 'missing-parents').map((b) => [b.batch_no, b.rows, b.rows_skipped])).toEqual([[1, 3, 0], [2, 1, 1]]);
  });

  // The run keeps the paths it knows published (PublishedPaths) to skip registry lookups. Here a folder the run
  // itself published (so the set holds its path) is deleted and re-created at the same path under a new key older
  // than every window, and a child of that path arrives late: after the delete sweep's tombstone, the late-arrival
  // sweep must find the path unpublished (the set forgot it) and publish the new folder before the child.
  it('publishes a folder re-created at a path the run had published and then deleted, before its late child', async () => {
    const fx = await fixture('recreated parent', { root: { kafka: { brokers: brokers(), partitions: 1, clientId: 'hw-poller-test' } } });
    const { t } = await one<{ t: string }>(fx.src, `SELECT to_char((clock_timestamp() - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS t`);
    const config = parseConfigObject({ ...fx.raw, tables: [tableConfig(fx.topic, { initialBaseline: t })] }, 'recreated parent');
    const folder = sampleRow({ path: '/5/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '2 hours'` });
    const file = sampleRow({ path: '/5/1/', parent: '/5/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '2 hours'` });
    await insertRows(fx.src, [folder, file]);
    const rt = fx.runtime(config);
    const real = await rt.source(config.tables[0]!);
    completed(await (await pollerWith(rt, real)).run({ requestedBy: 'test' }));

    // The folder changes: the next run publishes it again (and learns its path from its own checkpoint).
    await fx.src.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid = $1`, [folder.id]);
    await fx.src.query(`UPDATE demo."ReferralAttachment" SET name = 'renamed' WHERE stream_id = $1`, [folder.id]);
    // Older than the baseline: no window and no sweep reads it; only the search for a child's ancestors finds it.
    const recreated = sampleRow({ path: '/5/', bu: fx.bus[0]!, isDirectory: true, content: null, modifiedOnSql: `clock_timestamp() - interval '3 days'` });
    // Inside the last window, committed after it: a late arrival.
    const lateChild = sampleRow({ path: '/5/2/', parent: '/5/', bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '1 hour'` });
    let swept = false;
    const source: SourceConnector = {
      ...gatedSource(real, Promise.resolve()),
      // The delete sweep's question: just before it is asked, the folder is replaced at its path.
      memberKeys: async (r) => {
        if (!swept) {
          swept = true;
          await fx.src.query(`WITH m AS (DELETE FROM demo."cw_referralattachmentBase" WHERE cw_referralattachmentid = $1)
            DELETE FROM demo."ReferralAttachment" WHERE stream_id = $1`, [folder.id]);
          await insertRows(fx.src, [recreated, lateChild]);
        }
        return real.memberKeys(r);
      },
    };
    const run = await (await pollerWith(rt, source)).run({ requestedBy: 'test' });
    const outcome = completed(run);
    expect(swept).toBe(true);
    expect(outcome.tombstones).toBe(1);
    expect(outcome.lateArrivals).toBeGreaterThanOrEqual(1);
    const records = await readTopic(fx.topic);
    const inRun = changes(records).filter((c) => c.headers[HEADERS.runId] === run.runId);
    expect(inRun.filter((c) => c.key === folder.id)).toHaveLength(1);
    const parent = inRun.find((c) => c.key === recreated.id);
    const child = inRun.find((c) => c.key === lateChild.id);
    expect(parent, 'the re-created folder is published in the run').toBeDefined();
    expect(child).toBeDefined();
    expect(parent!.offset).toBeLessThan(child!.offset);
  });

  it('turns deleted rows into tombstones carrying the last published version, and logs them', async () => {
    const fx = await fixture('deletes');
    const rows = Array.from({ length: 4 }, (_, i) => sampleRow({ path: `/${i + 1}/`, bu: fx.bus[0]!, modifiedOnSql: `clock_timestamp() - interval '${10 + i} minutes'` }));
    const [updated, removed, kept1, kept2] = rows as [SampleRow, SampleRow, SampleRow, SampleRow];
    await insertRows(fx.src, rows);
    completed(await fx.poll());

    await fx.src.query(`UPDATE demo."ReferralAttachment" SET file_stream = $2 WHERE stream_id = $1`, [updated.id, randomBytes(100)]);
    await fx.src.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid = $1`, [updated.id]);
    expect(completed(await fx.poll()).published).toBe(1);
    const lastVersion = (await sourceTicks(fx.src)).get(updated.id)!;
    const removedVersion = (await sourceTicks(fx.src)).get(removed.id)!;

    await fx.src.query(`WITH m AS (DELETE FROM demo."cw_referralattachmentBase" WHERE cw_referralattachmentid = ANY($1::uuid[]))
      DELETE FROM demo."ReferralAttachment" WHERE stream_id = ANY($1::uuid[])`, [[updated.id, removed.id]]);
    const deleteRun = await fx.poll();
    expect(completed(deleteRun)).toMatchObject({ published: 0, tombstones: 2 });
    expect(await runTable(fx.ctl, deleteRun.runId)).toMatchObject({ tombstones: '2', rows_published: '0' });
    expect((await batches(fx.ctl, deleteRun.runId)).filter((b) => b.step === 'deletes').map((b) => b.rows)).toEqual([2]);

    const records = await readTopic(fx.topic);
    const tombstones = records.filter((r) => r.event.type === 'delete');
    expect(tombstones.map((r) => r.key).sort()).toEqual([updated.id, removed.id].sort());
    for (const t of tombstones) {
      expect(t.value).toBeNull();
      expect(t.headers[HEADERS.kind]).toBe('delete');
      expect(t.headers[HEADERS.table]).toBe(TABLE);
      expect(t.headers[HEADERS.runId]).toBe(deleteRun.runId);
      const version = t.key === updated.id ? lastVersion : removedVersion;
      expect(t.headers[HEADERS.modifiedOnTicks]).toBe(version.toString());
      expect(t.headers[HEADERS.modifiedOn]).toBe(isoFromTicks(version));
      // Same key, so same partition: the tombstone follows every change event of the key.
      for (const c of changes(records).filter((e) => e.key === t.key)) expect(c.offset).toBeLessThan(t.offset);
    }
    const { rows: log } = await fx.ctl.query(`SELECT key, modified_on_ticks::text AS ticks, run_id::text FROM ${CONTROL_SCHEMA}.deletion_log ORDER BY key`);
    expect(log).toEqual([
      { key: updated.id, ticks: lastVersion.toString(), run_id: deleteRun.runId },
      { key: removed.id, ticks: removedVersion.toString(), run_id: deleteRun.runId },
    ].sort((a, b) => (a.key < b.key ? -1 : 1)));
    const { rows: registry } = await fx.ctl.query(`SELECT key FROM ${CONTROL_SCHEMA}.published WHERE deleted ORDER BY key`);
    expect(registry.map((r) => r.key)).toEqual([updated.id, removed.id].sort());

    // A later run does not tombstone them again, and the rows that stay are untouched.
    expect(completed(await fx.poll())).toMatchObject({ tombstones: 0, published: 0 });
    expect((await readTopic(fx.topic)).filter((r) => r.event.type === 'delete')).toHaveLength(2);
    expect(keysOf(changes(records).filter((c) => c.key === kept1.id || c.key === kept2.id))).toHaveLength(2);
  });

  it('sends a blob bigger than one Kafka message as chunks and a manifest, and refuses one above maxBlobBytes', async () => {
    const fx = await fixture('blob', { root: { kafka: { brokers: brokers(), partitions: 3, maxMessageBytes: MiB }, poll: { maxBlobBytes: 4 * MiB } } });
    const big = sampleRow({ path: '/1/', bu: fx.bus[0]!, content: randomBytes(3 * MiB + 12_345) });
    const huge = sampleRow({ path: '/2/', bu: fx.bus[0]!, content: randomBytes(4 * MiB + 1) });
    const medium = sampleRow({ path: '/3/', bu: fx.bus[0]!, content: randomBytes(200_000) });
    const small = sampleRow({ path: '/4/', bu: fx.bus[0]!, content: randomBytes(1000) });
    await insertRows(fx.src, [big, huge, medium, small]);

    const run = await fx.poll();
    const outcome = completed(run);
    expect(outcome).toMatchObject({ published: 3, failed: 1 });
    const failures = await fx.ctl.query(`SELECT key, reason FROM ${CONTROL_SCHEMA}.row_failures WHERE run_id = $1`, [run.runId]);
    expect(failures.rows).toEqual([{ key: huge.id, reason: `content of ${4 * MiB + 1} bytes exceeds poll.maxBlobBytes (${4 * MiB})` }]);
    expect(await runTable(fx.ctl, run.runId)).toMatchObject({ rows_published: '3', rows_failed: '1' });

    const records = await readTopic(fx.topic);
    const events = changes(records);
    expect(keysOf(events)).toEqual([big.id, medium.id, small.id].sort());
    const manifest = events.find((e) => e.key === big.id)!;
    const sha = createHash('sha256').update(big.content!).digest();
    expect(manifest.content).toMatchObject({ kind: 'chunked', totalSize: big.content!.length });
    expect(manifest.contentSha256?.equals(sha)).toBe(true);
    const chunkSize = (manifest.content as { chunkSize: number }).chunkSize;
    const chunkCount = (manifest.content as { chunkCount: number }).chunkCount;
    expect(chunkCount).toBe(Math.ceil(big.content!.length / chunkSize));
    expect(chunkCount).toBeGreaterThan(3);

    const chunks = records.filter((r) => r.event.type === 'chunk' && r.event.chunk.key === big.id);
    expect(chunks).toHaveLength(chunkCount);
    for (const c of chunks) {
      expect(c.partition).toBe(manifest.partition);
      expect(c.offset).toBeLessThan(manifest.offset);
      expect(c.value!.length).toBeLessThanOrEqual(MiB);
    }
    const parts = chunks.map((c) => (c.event as { chunk: BlobChunk }).chunk).sort((a, b) => a.index - b.index);
    expect(parts.map((p) => p.index)).toEqual(Array.from({ length: chunkCount }, (_, i) => i));
    const whole = Buffer.concat(parts.map((p) => p.bytes));
    expect(createHash('sha256').update(whole).digest('hex')).toBe(sha.toString('hex'));
    const { sha: sourceSha } = await one<{ sha: string }>(fx.src, `SELECT encode(sha256(file_stream), 'hex') AS sha FROM demo."ReferralAttachment" WHERE stream_id = $1`, [big.id]);
    expect(sha.toString('hex')).toBe(sourceSha);

    const mediumEvent = events.find((e) => e.key === medium.id)!;
    expect(mediumEvent.content.kind === 'inline' && mediumEvent.content.bytes.equals(medium.content!)).toBe(true);
    expect(events.find((e) => e.key === small.id)!.contentSha256?.equals(createHash('sha256').update(small.content!).digest())).toBe(true);
  });

  it('fails, never publishes, a chunked row replaced by a shorter content between its page and its hash, and publishes the newer version next run', async () => {
    const fx = await fixture('blob shrunk', { root: { kafka: { brokers: brokers(), partitions: 3, maxMessageBytes: MiB }, poll: { maxBlobBytes: 8 * MiB } } });
    const big = sampleRow({ path: '/1/', bu: fx.bus[0]!, content: randomBytes(3 * MiB + 7) });
    await insertRows(fx.src, [big]);
    const shorter = randomBytes(MiB + 5);
    const rt = fx.runtime();
    await rt.ensureTableTopics(fx.config.tables[0]!);
    await rt.store().migrate();
    // The writer commits right after the page was read and before the poller hashes the content: the hash is the
    // shorter content's, and reading the page's length in slices finds only that content too.
    let replaced = false;
    const source = sourceWith(await rt.source(fx.config.tables[0]!), {
      contentHashes: async (real, keys) => {
        if (!replaced) {
          replaced = true;
          await fx.src.query(`UPDATE demo."ReferralAttachment" SET file_stream = $1 WHERE stream_id = $2`, [shorter, big.id]);
          await fx.src.query(`UPDATE demo."cw_referralattachmentBase" SET "ModifiedOn" = clock_timestamp() WHERE cw_referralattachmentid = $1`, [big.id]);
        }
        return real.contentHashes(keys);
      },
    });
    const run = await (await pollerWith(rt, source)).run({ requestedBy: 'test' });
    expect(completed(run)).toMatchObject({ published: 0, failed: 1 });
    const failures = await fx.ctl.query(`SELECT key, reason FROM ${CONTROL_SCHEMA}.row_failures WHERE run_id = $1`, [run.runId]);
    expect(failures.rows).toEqual([{ key: big.id, reason: 'content changed while it was being read; the newer version is published by a later window' }]);
    expect(changes(await readTopic(fx.topic)).filter((e) => e.key === big.id)).toEqual([]);

    expect(completed(await fx.poll())).toMatchObject({ published: 1, failed: 0 });
    const [manifest] = changes(await readTopic(fx.topic)).filter((e) => e.key === big.id);
    expect(manifest!.content).toMatchObject({ kind: 'chunked', totalSize: shorter.length });
    expect(manifest!.contentSha256!.equals(createHash('sha256').update(shorter).digest())).toBe(true);
  });

  it('publishes only the scoped BU, never an excluded key, and the parents its children need', async () => {
    const fx = await fixture('bu scope', {
      buCount: 2,
      extraTables: (topicFor) => [tableConfig(topicFor('all'), { name: 'AllUnits', excludedKeys: [] })],
    });
    const [bu1, bu2] = fx.bus as [string, string];
    const unmapped = randomUUID();
    const inScope = [sampleRow({ path: '/1/', bu: bu1 }), sampleRow({ path: '/2/', bu: bu1 })];
    const tableExcluded = sampleRow({ path: '/3/', bu: bu1 });
    const globallyExcluded = sampleRow({ path: '/4/', bu: bu1 });
    const otherBu = sampleRow({ path: '/5/', bu: bu2, isDirectory: true, content: null });
    const childInScope = sampleRow({ path: '/5/1/', parent: '/5/', bu: bu1 });
    const notInBuTable = sampleRow({ path: '/6/', bu: unmapped });
    await insertRows(fx.src, [...inScope, tableExcluded, globallyExcluded, otherBu, childInScope, notInBuTable]);
    const raw = {
      ...fx.raw,
      excludedKeys: [globallyExcluded.id],
      tables: [
        tableConfig(fx.topic, { scope: bu1, excludedKeys: [tableExcluded.id] }),
        ...(fx.raw.tables as Record<string, unknown>[]).slice(1),
      ],
    };
    const config = parseConfigObject(raw, 'bu scope');
    const run = await fx.poll({ config });
    expect(run.status).toBe('completed');

    const scoped = changes(await readTopic(fx.topic));
    expect(keysOf(scoped)).toEqual([...inScope.map((r) => r.id), childInScope.id, otherBu.id].sort());
    expect(scoped.find((e) => e.key === otherBu.id)?.businessUnit).toBe(bu2);
    for (const e of scoped.filter((x) => x.key !== otherBu.id)) expect(e.businessUnit).toBe(bu1);
    const { rows: tables } = await fx.ctl.query(`SELECT table_name, scope FROM ${CONTROL_SCHEMA}.run_tables WHERE run_id = $1 ORDER BY table_name`, [run.runId]);
    expect(tables).toEqual([{ table_name: 'AllUnits', scope: '*' }, { table_name: TABLE, scope: bu1 }]);

    const allTopic = config.tables[1]!.topic!;
    const all = changes(await readTopic(allTopic));
    // Every BU listed in LA_BU; the global exclusion applies to every table; a BU missing from LA_BU is not replicated.
    expect(keysOf(all)).toEqual([...inScope.map((r) => r.id), tableExcluded.id, otherBu.id, childInScope.id].sort());
    const { rows: registered } = await fx.ctl.query(`SELECT key FROM ${CONTROL_SCHEMA}.published WHERE key = ANY($1::text[])`, [[globallyExcluded.id, notInBuTable.id]]);
    expect(registered).toEqual([]);
  });

  it('keeps ModifiedOn exact to the microsecond, before 1970 and beyond 2^53 ticks', async () => {
    const fx = await fixture('precision');
    const stamps = ['2025-03-04 05:06:07.123457+00', '1965-07-08 09:10:11.000001+00', '2026-01-01 00:00:00.999999+00', '2025-03-04 05:06:07.123458+00'];
    const rows = stamps.map((s, i) => sampleRow({ path: `/${i + 1}/`, bu: fx.bus[0]!, modifiedOnSql: `timestamptz '${s}'` }));
    await insertRows(fx.src, rows);
    const run = await fx.poll();
    completed(run);

    const expected = await sourceTicks(fx.src);
    const events = changes(await readTopic(fx.topic));
    expect(events).toHaveLength(rows.length);
    for (const [i, row] of rows.entries()) {
      const event = events.find((e) => e.key === row.id)!;
      const fromText = ticksFromIso(stamps[i]!);
      expect(expected.get(row.id)).toBe(fromText);
      expect(event.modifiedOn).toBe(fromText);
      expect(event.headers[HEADERS.modifiedOnTicks]).toBe(fromText.toString());
      expect(event.headers[HEADERS.modifiedOn]).toBe(isoFromTicks(fromText));
    }
    expect(events.find((e) => e.key === rows[0]!.id)!.modifiedOn! + 10n).toBe(events.find((e) => e.key === rows[3]!.id)!.modifiedOn);
    expect(events.find((e) => e.key === rows[1]!.id)!.modifiedOn).toBeLessThan(0n);
    const { rows: registry } = await fx.ctl.query<{ key: string; ticks: string }>(`SELECT key, modified_on_ticks::text AS ticks FROM ${CONTROL_SCHEMA}.published`);
    for (const r of registry) expect(BigInt(r.ticks)).toBe(expected.get(r.key));
  });
});

describe('poller CLI failures', () => {
  it('exits 2 on a bad configuration and names every bad field', async () => {
    const fx = await fixture('bad config');
    const raw = { ...fx.raw, tables: [tableConfig(fx.topic, { batchSize: -1, source: 'no_such_source' })] };
    const result = await startCli(['poll', '--config', await writeConfigFile(raw)]).done;
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain('tables.0.batchSize');
    expect(result.stderr).toContain('tables.0.source');
    expect(result.stderr).toContain('no database named "no_such_source"');
  });

  it('fails the run and exits 1 when the source stays unreachable after its retries', async () => {
    const fx = await fixture('unreachable');
    const port = await closedPort();
    const result = await startCli(['poll', '--config', await writeConfigFile(fx.raw)], { HIGHWATER_DB_SOURCE_URL: `postgres://postgres@127.0.0.1:${port}/nowhere` }).done;
    expect(result.code, result.stderr + result.stdout).toBe(1);
    const run = await one<{ status: string; error: string }>(fx.ctl, `SELECT status, error FROM ${CONTROL_SCHEMA}.runs`);
    expect(run.status).toBe('failed');
    expect(run.error).toMatch(new RegExp(`^${TABLE}: PostgreSQL source: (reading the clock|reading open transactions) of demo\\.ReferralAttachment: `));
    expect(run.error).toContain('ECONNREFUSED');
    expect(result.stdout).toContain('FAILED');
    const { rows: watermarks } = await fx.ctl.query(`SELECT high_water_ticks, lease_owner FROM ${CONTROL_SCHEMA}.watermarks`);
    expect(watermarks).toEqual([{ high_water_ticks: null, lease_owner: null }]);
  });
});
