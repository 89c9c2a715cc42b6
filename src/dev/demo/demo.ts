import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { parseConfigObject, tenantOf } from '../../config/load.js';
import type { Config } from '../../config/schema.js';
import { defaultCacheDir, ensureKafkaRuntime, kafkaRuntimeAt, startKafka, type KafkaBroker } from '../kafka/kafka.js';
import { coerceError, HighwaterError } from '../../errors.js';
import { scrubSecrets } from '../../logger.js';
import type { Logger } from '../../logger.js';
import { sourceDigest, targetDigest, type Digest } from '../../ops/reconcile/digest.js';
import { quotePg } from '../../sql/ident.js';
import { isoFromTicks } from '../../time/ticks.js';
import { Runtime, sourceSpec, targetTableNameFor } from '../../wiring.js';
import { applyDelta, buildSample, createBusinessUnits, DEFAULT_SHAPE, insertRows, SOURCE_DDL } from './sample.js';

/**
 * `highwater demo`: the main job end to end on sample data. It starts a local Kafka (fetched from Maven Central on
 * first use) unless HIGHWATER_KAFKA_BROKERS names one, builds a source and a target database on the PostgreSQL at
 * HIGHWATER_DEMO_PG_URL (default the local server), loads a few thousand rows, polls, consumes until the target
 * matches, applies a delta (updates, inserts, deletes), polls again, and prints a reconciliation line each time.
 */

export interface DemoOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly logger: Logger;
  readonly out?: (line: string) => void;
  readonly timeoutMs?: number;
}

/** Database names; HIGHWATER_DEMO_DB_PREFIX changes them so a test run never touches a person's demo. */
function demoDatabases(env: NodeJS.ProcessEnv): { source: string; target: string } {
  const prefix = env.HIGHWATER_DEMO_DB_PREFIX ?? 'highwater_demo';
  return { source: `${prefix}_source`, target: `${prefix}_target` };
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const env = options.env ?? process.env;
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`));
  const adminUrl = env.HIGHWATER_DEMO_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbs = demoDatabases(env);
  // PostgreSQL first: a server that is down is one line, before a broker is started for nothing.
  await recreateDatabases(adminUrl, dbs);
  out(`recreated the databases ${dbs.source} and ${dbs.target} (the demo drops them and starts afresh each run)`);
  const kafka = await kafkaForDemo(env, options.logger, out);
  try {
    const config = demoConfig(adminUrl, kafka.brokers, dbs, env.HIGHWATER_DEMO_TOPIC_PREFIX);
    return await replicate(config, options.logger, out, options.timeoutMs ?? 180_000);
  } finally {
    await kafka.stop();
  }
}

async function kafkaForDemo(env: NodeJS.ProcessEnv, logger: Logger, out: (l: string) => void): Promise<{ brokers: string[]; stop(): Promise<void> }> {
  if (env.HIGHWATER_KAFKA_BROKERS) {
    out(`using Kafka at ${env.HIGHWATER_KAFKA_BROKERS}`);
    return { brokers: env.HIGHWATER_KAFKA_BROKERS.split(','), stop: async () => undefined };
  }
  const cacheDir = defaultCacheDir(env);
  const cached = await access(join(kafkaRuntimeAt(cacheDir).dir, '.complete')).then(() => true, () => false);
  out(cached
    ? 'starting a local Kafka (KRaft)…'
    : `downloading Kafka's jars from Maven Central into ${cacheDir} (first run only; this can take a few minutes), then starting a local Kafka (KRaft)…`);
  // Maven's downloads go to stderr as they finish, so a first run that takes minutes is visibly doing something.
  const runtime = await ensureKafkaRuntime(cacheDir, cached ? {} : { onDownload: (line) => process.stderr.write(`${line}\n`) });
  const dataDir = await mkdtemp(join(tmpdir(), 'highwater-demo-kafka-'));
  const broker: KafkaBroker = await startKafka({ runtime, dataDir, logFile: join(dataDir, 'kafka.log') });
  out(`Kafka ${broker.bootstrap} is up`);
  logger.debug({ dataDir }, 'demo broker data');
  return {
    brokers: [broker.bootstrap],
    stop: async () => {
      await broker.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function recreateDatabases(adminUrl: string, dbs: { source: string; target: string }): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 10_000 });
  try {
    await admin.connect();
  } catch (err) {
    await admin.end().catch(() => undefined);
    throw new HighwaterError('DB_UNAVAILABLE', `the demo's PostgreSQL at ${scrubSecrets(adminUrl)} does not answer (${coerceError(err).message}): start it, or set HIGHWATER_DEMO_PG_URL to one the demo may create databases on`, { cause: err });
  }
  try {
    for (const db of [dbs.source, dbs.target]) {
      await admin.query(`DROP DATABASE IF EXISTS ${quotePg(db)} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${quotePg(db)}`);
    }
  } finally {
    await admin.end();
  }
}

export function demoConfig(adminUrl: string, brokers: string[], dbs: { source: string; target: string }, topicPrefix = 'highwater'): Config {
  return parseConfigObject({
    controlStore: { database: 'target', schema: 'highwater_control' },
    kafka: { brokers, partitions: 3, clientId: 'highwater-demo' },
    databases: [
      { name: 'source', kind: 'postgres', connectionString: withDatabase(adminUrl, dbs.source), tenant: 'gwent' },
      { name: 'target', kind: 'postgres', connectionString: withDatabase(adminUrl, dbs.target) },
    ],
    tables: [{
      name: 'ReferralAttachment',
      source: 'source',
      blob: { schema: 'demo', table: 'ReferralAttachment' },
      metadata: { schema: 'demo', table: 'cw_referralattachmentBase', joinColumn: 'cw_referralattachmentid' },
      businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
      // The demo writes its rows before it polls, so no commit can arrive late; production keeps the 240-minute default.
      safetyBufferMinutes: 0,
      batchSize: 500,
      topic: `${topicPrefix}.source.ReferralAttachment`,
    }],
    targets: [{ name: 'warehouse', database: 'target', schema: 'replica', groupId: `${topicPrefix}.warehouse`, retry: { initialDelayMs: 500, maxDelayMs: 5000, maxAttempts: 8, backfillAfterAttempts: 2 } }],
    log: { level: 'warn' },
  }, 'demo configuration');
}

async function replicate(config: Config, logger: Logger, out: (l: string) => void, timeoutMs: number): Promise<number> {
  const rt = new Runtime(config, logger);
  const table = config.tables[0]!;
  const target = config.targets[0]!;
  const sourcePool = rt.pgPool(config.databases[0]!);
  const targetPool = rt.pgPool(config.databases[1]!);
  let consumers: Awaited<ReturnType<Runtime['startConsumers']>> | undefined;
  try {
    await sourcePool.query(SOURCE_DDL);
    const bus = await createBusinessUnits(sourcePool, 4);
    await insertRows(sourcePool, buildSample(DEFAULT_SHAPE, bus));
    out(`loaded ${DEFAULT_SHAPE.roots * (1 + DEFAULT_SHAPE.foldersPerRoot) + DEFAULT_SHAPE.files} sample rows (folders, files, ${DEFAULT_SHAPE.largeFiles} blobs over 1 MiB)`);
    await rt.store().migrate();
    consumers = await rt.startConsumers(target);
    const poller = await rt.poller();
    const check = () => compare(sourcePool, targetPool, config, target.schema);
    let last: Awaited<ReturnType<typeof check>> | undefined;
    for (const phase of ['initial load', 'delta'] as const) {
      if (phase === 'delta') {
        await applyDelta(sourcePool, { updates: 100, inserts: 50, deletes: 20 }, bus);
        out('applied a delta at the source: 100 updates, 51 inserts, 20 deletes');
      }
      const summary = await poller.run({ requestedBy: 'demo' });
      const t = summary.tables[0]!;
      if (summary.status !== 'completed' || !t.outcome) {
        out(`poll failed: ${t.error}`);
        out(`verdict: FAILED — the ${phase} poll of ${table.name} failed (run ${summary.runId}); nothing was compared`);
        return 1;
      }
      out(`${phase}: run ${summary.runId} published ${t.outcome.published} rows (${t.outcome.skipped} unchanged skipped, ${t.outcome.tombstones} tombstones), window end ${isoFromTicks(t.outcome.window.end)}`);
      const result = await waitForParity(check, timeoutMs);
      out(`reconcile ${phase}: source ${result.source.rows} rows ${result.source.checksum.slice(0, 16)} | target ${result.target.rows} rows ${result.target.checksum.slice(0, 16)} -> ${result.equal ? 'EQUAL' : 'DIFFERENT'}`);
      if (!result.equal) {
        out(verdictLine(table.name, result));
        out(`next: \`highwater reconcile\` with a configuration for these databases lists the differing keys (docs/operations.md)`);
        return 3;
      }
      last = result;
    }
    const consistent = await consumers.writer.consistentAsOf(consumers.groupId);
    for (const c of consistent) out(`target ${target.name}: ${c.table} consistent as of ${c.watermark === null ? 'unknown' : isoFromTicks(c.watermark)}`);
    void tenantOf;
    if (last) out(verdictLine(table.name, last));
    out('next: copy docs/examples/highwater.yaml to ./highwater.yaml, point it at your databases, then `highwater check` and `highwater init` (README: "Pointing it at your own services")');
    return 0;
  } finally {
    await consumers?.stop();
    await rt.close();
  }
}

/** The demo's last line: one verdict over every table, saying what differs when something does. */
export function verdictLine(table: string, result: { source: Digest; target: Digest; equal: boolean }): string {
  if (result.equal) return `verdict: all tables equal — ${table}: ${result.source.rows} rows, the same content checksum in source and target`;
  const rows = result.source.rows === result.target.rows ? `both ${result.source.rows} rows` : `source ${result.source.rows} rows, target ${result.target.rows}`;
  return `verdict: DIFFERENT — ${table}: ${rows}; content checksums ${result.source.checksum === result.target.checksum ? 'equal' : 'differ'}`;
}

async function compare(sourcePool: pg.Pool, targetPool: pg.Pool, config: Config, schema: string): Promise<{ source: Digest; target: Digest; equal: boolean }> {
  const table = config.tables[0]!;
  const [source, target] = await Promise.all([
    sourceDigest(sourcePool, sourceSpec(config, table)),
    targetDigest(targetPool, schema, targetTableNameFor('postgres', table.name), tenantOf(config, table)),
  ]);
  return { source, target, equal: source.rows === target.rows && source.checksum === target.checksum };
}

async function waitForParity<T extends { equal: boolean }>(check: () => Promise<T>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await check();
    if (result.equal || Date.now() > deadline) return result;
    await new Promise((r) => setTimeout(r, 500));
  }
}
