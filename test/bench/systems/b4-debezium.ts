import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type pg from 'pg';
import { freePorts } from '../../../src/dev/kafka/ports.js';
import { quotePg } from '../../../src/sql/ident.js';
import type { BenchContext } from '../context.js';
import { stageTimeoutMs } from '../context.js';
import type { WorkloadId } from '../model.js';
import { createDatabase, dbNowMs, quietPool } from '../env/pgdb.js';
import { startLogicalCluster } from '../env/pg-cluster.js';
import { startProc, type Proc } from '../env/procs.js';
import { createSourceSchema, createSourceTable, loadRows } from '../env/source.js';
import type { Prepared } from '../workloads/bulk.js';
import { CONNECT_VERSION, DEBEZIUM_SINK_SUPPORT_VERSION, DEBEZIUM_SINK_VERSION, DEBEZIUM_SOURCE_VERSION, ensureDebeziumRuntime } from './debezium-runtime.js';

/**
 * B4, the peer pipeline users would pick instead: Debezium's PostgreSQL source (snapshot of the blob table and its
 * metadata table, JSON with schemas, acks=all by Connect's default) on a Kafka Connect worker (standalone, on the
 * bench's broker), and Debezium's JDBC sink upserting both topics into the bench's target database. The source is
 * a private cluster with wal_level=logical holding the same rows. Timed from the source connector's creation to
 * the moment both target tables hold every row; rows/s counts source rows (each is two records, blob and metadata).
 */

interface B4Env {
  readonly worker: Proc;
  readonly rest: string;
  readonly cluster: pg.Pool;
  readonly clusterPort: number;
  readonly schema: string;
}

let shared: Promise<B4Env | undefined> | undefined;

export async function runB4(ctx: BenchContext, w: WorkloadId, rep: number, p: Prepared): Promise<void> {
  shared ??= startB4(ctx, p).catch((err: unknown) => {
    ctx.collect.note(`B4 could not run: ${err instanceof Error ? err.message.split('\n').slice(0, 6).join(' / ') : String(err)}`);
    return undefined;
  });
  const env = await shared;
  if (env === undefined) return;
  try {
    await oneRep(ctx, env, w, rep, p);
  } catch (err) {
    ctx.collect.note(`B4 repetition ${rep} failed: ${err instanceof Error ? err.message.split('\n').slice(0, 6).join(' / ') : String(err)}`);
  }
}

async function startB4(ctx: BenchContext, p: Prepared): Promise<B4Env> {
  const runtime = await ensureDebeziumRuntime();
  const cluster = await startLogicalCluster(ctx.env.workDir);
  ctx.defer(() => cluster.stop());
  const admin = quietPool(cluster.url('postgres'), 1);
  await createDatabase(admin, 'source');
  await admin.end();
  const pool = quietPool(cluster.url('source'), 2);
  ctx.defer(() => pool.end());
  await createSourceSchema(pool, p.source.schema);
  await createSourceTable(pool, p.source);
  await loadRows(pool, p.source, p.rows, p.base);
  const [restPort] = await freePorts(1);
  const workerProps = join(ctx.env.workDir, 'connect-worker.properties');
  await writeFile(workerProps, workerProperties(ctx.env.brokers, runtime.pluginPath, restPort!, join(ctx.env.workDir, 'connect.offsets')));
  const worker = startProc({
    name: 'kafka-connect', command: 'java', logFile: join(ctx.env.workDir, 'connect.log'), group: true,
    args: ['-Xmx1g', '-cp', `${runtime.connectLib}/*`, `-Dlog4j.configuration=file:${runtime.log4jConfig}`, 'org.apache.kafka.connect.cli.ConnectStandalone', workerProps],
  });
  ctx.defer(async () => {
    await worker.stop();
  });
  const rest = `http://127.0.0.1:${restPort}`;
  await waitForRest(rest, worker);
  ctx.collect.note(`B4: Kafka Connect ${CONNECT_VERSION} (standalone) with Debezium PostgreSQL source ${DEBEZIUM_SOURCE_VERSION} and Debezium JDBC sink ${DEBEZIUM_SINK_VERSION} (debezium-sink ${DEBEZIUM_SINK_SUPPORT_VERSION}: 3.6.x of the sink is not served by Maven Central, 3.4.3's debezium-sink neither), JSON converter with schemas, upsert by record key`);
  return { worker, rest, cluster: pool, clusterPort: cluster.port, schema: p.source.schema };
}

export function workerProperties(brokers: readonly string[], pluginPath: string, restPort: number, offsetsFile: string): string {
  return [
    `bootstrap.servers=${brokers.join(',')}`,
    'key.converter=org.apache.kafka.connect.json.JsonConverter',
    'value.converter=org.apache.kafka.connect.json.JsonConverter',
    'key.converter.schemas.enable=true',
    'value.converter.schemas.enable=true',
    `offset.storage.file.filename=${offsetsFile}`,
    'offset.flush.interval.ms=1000',
    `plugin.path=${pluginPath}`,
    'plugin.discovery=hybrid_warn',
    `listeners=http://127.0.0.1:${restPort}`,
    // The sink subscribes before the source has created its topics; find them in seconds, not 5 minutes.
    'consumer.metadata.max.age.ms=1000',
    '',
  ].join('\n');
}

async function waitForRest(rest: string, worker: Proc): Promise<void> {
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${rest}/connector-plugins`);
      if (res.ok) {
        const plugins = (await res.json()) as { class: string }[];
        const names = plugins.map((x) => x.class);
        for (const need of ['io.debezium.connector.postgresql.PostgresConnector', 'io.debezium.connector.jdbc.JdbcSinkConnector']) {
          if (!names.includes(need)) throw new Error(`Kafka Connect did not load ${need}; plugins: ${names.join(', ')}`);
        }
        return;
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('Kafka Connect did not load')) throw err;
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`Kafka Connect's REST API did not answer within 180 s; last output:\n${worker.tail()}`);
}

async function createConnector(rest: string, name: string, config: Record<string, string>): Promise<void> {
  const res = await fetch(`${rest}/connectors`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, config }) });
  if (!res.ok) throw new Error(`creating connector ${name}: HTTP ${res.status} ${await res.text()}`);
}

async function deleteConnector(rest: string, name: string): Promise<void> {
  await fetch(`${rest}/connectors/${name}`, { method: 'DELETE' }).catch(() => undefined);
}

async function connectorTrace(rest: string, name: string): Promise<string | undefined> {
  const res = await fetch(`${rest}/connectors/${name}/status`).catch(() => undefined);
  if (res === undefined || !res.ok) return undefined;
  const status = (await res.json()) as { connector: { state: string; trace?: string }; tasks: { state: string; trace?: string }[] };
  const failed = [status.connector, ...status.tasks].find((s) => s.state === 'FAILED');
  return failed?.trace?.split('\n').slice(0, 3).join(' / ');
}

async function oneRep(ctx: BenchContext, env: B4Env, w: WorkloadId, rep: number, p: Prepared): Promise<void> {
  const prefix = `b4r${rep}`;
  const topics = [p.source.blob, p.source.meta].map((t) => `${prefix}.${env.schema}.${t}`);
  const tables = [p.source.blob, p.source.meta].map((t) => `${prefix}_${t}`);
  const names = { source: `${prefix}-source`, sink: `${prefix}-sink` };
  await createConnector(env.rest, names.sink, sinkConfig(ctx.env.targetUrl, topics, prefix));
  const started = await dbNowMs(ctx.target);
  await createConnector(env.rest, names.source, sourceConfig(env, prefix, p));
  try {
    const result = await waitForSink(ctx, env, names, topics, tables, p.load.rows, started);
    ctx.collect.measure({ workload: w, system: 'B4', stage: 'e2e', rep, rows: result.rows, bytes: p.load.bytes, ms: result.ms, complete: result.complete, ...(result.failure ? { note: result.failure } : {}) });
    if (result.snapshotMs !== undefined) ctx.collect.observe(w, 'B4', rep, 'source half (snapshot in Kafka)', result.snapshotMs / 1000, 's');
    ctx.collect.peak(w, 'B4', 'kafka-connect (cumulative)', rep, env.worker.peakRss());
  } finally {
    await deleteConnector(env.rest, names.source);
    await deleteConnector(env.rest, names.sink);
    await dropSlot(env.cluster, `${prefix}_slot`);
    for (const t of tables) await ctx.target.query(`DROP TABLE IF EXISTS ${quotePg(t)}`);
  }
}

function sourceConfig(env: B4Env, prefix: string, p: Prepared): Record<string, string> {
  return {
    'connector.class': 'io.debezium.connector.postgresql.PostgresConnector',
    'database.hostname': '127.0.0.1', 'database.port': String(env.clusterPort), 'database.user': 'postgres', 'database.password': '',
    'database.dbname': 'source', 'topic.prefix': prefix, 'plugin.name': 'pgoutput',
    'slot.name': `${prefix}_slot`, 'publication.name': `${prefix}_pub`, 'publication.autocreate.mode': 'filtered',
    'table.include.list': `${env.schema}.${p.source.blob},${env.schema}.${p.source.meta}`,
    'snapshot.mode': 'initial',
    'topic.creation.default.replication.factor': '1', 'topic.creation.default.partitions': '6',
  };
}

function sinkConfig(targetUrl: string, topics: readonly string[], prefix: string): Record<string, string> {
  const u = new URL(targetUrl);
  return {
    'connector.class': 'io.debezium.connector.jdbc.JdbcSinkConnector',
    'connection.url': `jdbc:postgresql://${u.hostname}:${u.port || '5432'}${u.pathname}`,
    'connection.username': decodeURIComponent(u.username || 'postgres'), 'connection.password': decodeURIComponent(u.password),
    topics: topics.join(','),
    'insert.mode': 'upsert', 'primary.key.mode': 'record_key', 'delete.enabled': 'true', 'schema.evolution': 'basic',
    'collection.name.format': `${prefix}_\${source.table}`,
    'quote.identifiers': 'true',
  };
}

interface SinkResult {
  readonly rows: number;
  readonly ms: number;
  readonly complete: boolean;
  readonly snapshotMs?: number;
  readonly failure?: string;
}

async function waitForSink(ctx: BenchContext, env: B4Env, names: { source: string; sink: string }, topics: readonly string[], tables: readonly string[], expected: number, started: number): Promise<SinkResult> {
  const deadline = Date.now() + stageTimeoutMs(expected, 50);
  let snapshotMs: number | undefined;
  for (;;) {
    const counts = await Promise.all(tables.map((t) => countRows(ctx.target, t)));
    const now = await dbNowMs(ctx.target);
    snapshotMs ??= (await topicRecords(ctx, topics)) >= 2 * expected ? now - started : undefined;
    const rows = Math.min(...counts);
    if (rows >= expected) return { rows, ms: now - started, complete: true, ...(snapshotMs === undefined ? {} : { snapshotMs }) };
    const failure = (await connectorTrace(env.rest, names.source)) ?? (await connectorTrace(env.rest, names.sink));
    if (failure !== undefined || Date.now() > deadline) return { rows, ms: now - started, complete: false, failure: failure ?? 'timed out' };
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Records of the source topics: the source half is done when they hold both records of every row. */
async function topicRecords(ctx: BenchContext, topics: readonly string[]): Promise<number> {
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    let sum = 0;
    for (const topic of topics) {
      const offsets = await admin.fetchTopicOffsets(topic).catch(() => []);
      sum += offsets.reduce((n, o) => n + Number(o.high), 0);
    }
    return sum;
  } finally {
    await admin.disconnect();
  }
}

async function countRows(pool: pg.Pool, table: string): Promise<number> {
  try {
    const { rows } = await pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${quotePg(table)}`);
    return Number(rows[0]!.n);
  } catch (err) {
    // 42P01: the sink has not created the table yet.
    if ((err as { code?: string }).code === '42P01') return 0;
    throw err;
  }
}

async function dropSlot(cluster: pg.Pool, slot: string): Promise<void> {
  for (let i = 0; i < 40; i++) {
    const { rows } = await cluster.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    if (rows.length === 0) return;
    if (!rows[0]!.active) {
      await cluster.query('SELECT pg_drop_replication_slot($1)', [slot]);
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
