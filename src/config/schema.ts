import { z } from 'zod';
import { IDENTIFIER_PATTERN } from '../sql/ident.js';
import { MAX_CONTENT_BYTES } from '../apply/sink/limits.js';
import { ticksFromIso } from '../time/ticks.js';

/**
 * The configuration, declared once per option: type, default, constraint and description. It is parsed once at
 * start-up into a frozen object; docs/configuration.md is generated from these descriptions
 * (`npm run docs:config`), and a unit test fails when the two drift apart.
 */

const identifier = z.string().regex(IDENTIFIER_PATTERN, 'must be a plain SQL identifier (letters, digits, _, $, #; starting with a letter or _)');
const name = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$/, 'must be letters, digits, _, . or - (at most 100)');
const timestamp = z.string().refine((s) => {
  try {
    ticksFromIso(s);
    return true;
  } catch {
    return false;
  }
}, 'must be an ISO-8601 timestamp such as 2020-01-01T00:00:00Z');

/**
 * An object that may be left out as a whole: it then takes every field's own default. The defaults stay written
 * once, on the fields, and the generated reference still shows the whole default object.
 */
function defaulted<T extends z.ZodType<object>>(schema: T): z.ZodDefault<T> {
  return schema.default(schema.parse({}) as z.util.NoUndefined<z.output<T>>);
}

const tableRef = z.strictObject({
  schema: identifier.default('dbo').describe('Schema of the table.'),
  table: identifier.describe('Table name.'),
});

export const kafkaSchema = z.strictObject({
  brokers: z.array(z.string().regex(/^[^\s:]+:\d+$/, 'must be host:port')).min(1).default(['127.0.0.1:9092'])
    .describe('Bootstrap brokers. Env: HIGHWATER_KAFKA_BROKERS (comma-separated).'),
  clientId: z.string().default('highwater').describe('Kafka client id prefix.'),
  ssl: z.boolean().default(false).describe('Use TLS to the brokers.'),
  sasl: z.strictObject({
    mechanism: z.enum(['plain', 'scram-sha-256', 'scram-sha-512']).describe('SASL mechanism.'),
    username: z.string().describe('SASL user. Env: HIGHWATER_KAFKA_USERNAME.'),
    password: z.string().describe('SASL password (never logged). Env: HIGHWATER_KAFKA_PASSWORD.'),
  }).optional().describe('SASL authentication, when the cluster requires it.'),
  partitions: z.number().int().min(1).max(1000).default(6).describe('Partitions of each table topic created by highwater.'),
  replicationFactor: z.number().int().min(1).max(10).default(1).describe('Replication factor of topics created by highwater (3 in production).'),
  maxMessageBytes: z.number().int().min(65_536).max(64 * 1024 * 1024).default(1_048_576)
    .describe('Largest record highwater produces, and the max.message.bytes of the topics it creates. Blobs bigger than the inline limit derived from it are chunked.'),
  connectionTimeoutMs: z.number().int().positive().default(10_000).describe('Time to connect to a broker.'),
  startupTimeoutMs: z.number().int().min(1000).max(600_000).default(15_000)
    .describe('How long a command waits for the first answer from the brokers before it gives up with one line naming them (exit 1). Once connected, outages are retried as usual.'),
});

export const encodingSchema = z.strictObject({
  kind: z.enum(['single-object', 'registry']).default('single-object')
    .describe('single-object: Avro single-object encoding with the schema fingerprint, schemas from schema/avro (no registry needed). registry: Confluent wire format through a schema registry.'),
  registryUrl: z.string().url().optional().describe('Schema registry base URL (Confluent-compatible). Env: HIGHWATER_SCHEMA_REGISTRY_URL.'),
}).superRefine((e, ctx) => {
  if (e.kind === 'registry' && !e.registryUrl) {
    ctx.addIssue({ code: 'custom', path: ['registryUrl'], message: 'is required when kind is registry' });
  }
});

export const databaseSchema = z.strictObject({
  name: name.describe('Name other sections use to refer to this database.'),
  kind: z.enum(['postgres', 'sqlserver']).describe('Database engine.'),
  connectionString: z.string().min(1).optional()
    .describe('Connection string (never logged). Env: HIGHWATER_DB_<NAME>_URL, with the name upper-cased and non-alphanumerics as _.'),
  poolSize: z.number().int().min(1).max(100).default(4).describe('Connections in the pool.'),
  tenant: z.string().max(100).default('').describe('Tenant this source stands for when several sources feed one target.'),
  oldestOpenTransaction: z.enum(['auto', 'off']).default('auto')
    .describe('auto: clamp each window end to the start of the oldest open write transaction, where the login may see it; off: the safety buffer alone.'),
}).superRefine((db, ctx) => {
  const problem = db.connectionString === undefined ? undefined : connectionStringProblem(db.kind, db.connectionString);
  if (problem) ctx.addIssue({ code: 'custom', path: ['connectionString'], message: problem });
});

/**
 * Why a connection string cannot belong to the database's engine, or undefined when its shape fits. Caught here so
 * that an SQL Server string on a `postgres` database fails at once instead of after the driver's retries. The
 * message never quotes the string: it holds a password.
 */
export function connectionStringProblem(kind: 'postgres' | 'sqlserver', text: string): string | undefined {
  const trimmed = text.trim();
  const pgUrl = /^postgres(ql)?:\/\//i.test(trimmed) || /^socket:/i.test(trimmed) || trimmed.startsWith('/');
  const mssqlUrl = /^(mssql|sqlserver):\/\//i.test(trimmed);
  const keyValues = !/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed) && /^\s*[^=;]+=/.test(trimmed);
  if (kind === 'postgres' && !pgUrl) {
    const looksLike = mssqlUrl || keyValues ? 'looks like an SQL Server connection string' : 'is not a PostgreSQL URL';
    return `${looksLike}, but the database's kind is postgres: use a URL such as postgres://user@host:5432/database (or set kind: sqlserver)`;
  }
  if (kind === 'sqlserver' && !mssqlUrl && !keyValues) {
    const looksLike = pgUrl ? 'looks like a PostgreSQL URL' : 'is neither an ADO-style string nor an mssql:// URL';
    return `${looksLike}, but the database's kind is sqlserver: use an ADO-style string such as Server=host,1433;Database=db;User Id=user (or set kind: postgres)`;
  }
  return undefined;
}

export const businessUnitSchema = z.strictObject({
  column: identifier.describe('Column of the metadata table holding the owning business unit.'),
  mapTable: tableRef.extend({
    idColumn: identifier.describe('Column of the BU table matched against the metadata column.'),
  }).optional().describe('BU table (the seeds\' LA_BU): when set, only rows whose BU is listed there are replicated.'),
});

export const tableSchema = z.strictObject({
  name: name.describe('Logical table name; used in topic names, the control store and the target.'),
  enabled: z.boolean().default(true).describe('Whether the poller reads this table.'),
  source: name.describe('Name of the source database (see databases).'),
  blob: tableRef.describe('The FileTable-style blob table.'),
  metadata: tableRef.extend({
    joinColumn: identifier.describe('Column of the metadata table equal to the blob table key.'),
  }).describe('The metadata table that carries ModifiedOn and the business unit.'),
  keyColumn: identifier.default('stream_id').describe('Key column of the blob table (unique).'),
  modifiedOnColumn: identifier.default('ModifiedOn').describe('ModifiedOn column of the metadata table.'),
  columns: defaulted(z.strictObject({
    name: identifier.default('name').describe('File name column.'),
    content: identifier.default('file_stream').describe('Content column (varbinary(max) / bytea).'),
    isDirectory: identifier.default('is_directory').describe('Directory flag column.'),
    pathLocator: identifier.default('path_locator').describe('Hierarchy column of the row (hierarchyid / text).'),
    parentPathLocator: identifier.default('parent_path_locator').describe('Hierarchy column of the parent; NULL for roots.'),
    creationTime: identifier.nullable().default('creation_time').describe('Creation time column, or null.'),
    lastWriteTime: identifier.nullable().default('last_write_time').describe('Last write time column, or null.'),
  })).describe('Column names of the blob table.'),
  businessUnit: businessUnitSchema.optional().describe('Business-unit mapping; omit when the table has none.'),
  scope: z.string().max(100).nullable().default(null).describe('Business unit to poll (its id); null for all BUs.'),
  excludedKeys: z.array(z.string()).default([]).describe('Keys never replicated for this table (added to the global list).'),
  safetyBufferMinutes: z.number().min(0).max(7 * 24 * 60).default(240).describe('Overlap between windows and distance of the window end from the source clock.'),
  batchSize: z.number().int().min(1).max(50_000).default(500).describe('Rows per page: the unit the poller checkpoints (and resumes from) after Kafka acknowledged it. Small rows are read and sent several pages at a time, each page still checkpointed on its own.'),
  initialBaseline: timestamp.default('1900-01-01T00:00:00Z').describe('Window start of the first run, before any high-watermark exists.'),
  topic: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/).optional().describe('Topic name; default highwater.<source>.<name>.'),
  maxdop: z.number().int().min(0).max(64).nullable().default(null).describe('SQL Server sources: OPTION (MAXDOP n) on window reads; null leaves the server default.'),
});

/**
 * Batches kafkajs hands out at once when a fetch's partitions are applied together (partitionsConsumedConcurrently
 * unset): enough for every partition of one fetch, so they arrive together and are gathered into one transaction
 * per table. They hold no connection each: the group is written by one transaction at a time.
 */
export const FETCH_TOGETHER_WIDTH = 64;

/**
 * A fetch applied together takes up to this many partitions' worth of bytes (fetchMaxBytesPerPartition each): a
 * table's partitions (kafka.partitions, 6 by default) then come in one fetch. kafkajs' 10 MiB for the whole fetch
 * filled one or two partitions at 8 MiB each, and the children of the others' parents were held (44k of a 100k-row
 * rebuild).
 */
export const FETCH_TOGETHER_PARTITIONS = 8;

/**
 * The most partitions a consumer may apply at once with a target pool of `poolSize` connections: one transaction per
 * partition, and one connection left for the held-children resolver, the retry topic and position reads. Pure.
 */
export function mostConcurrentPartitions(poolSize: number): number {
  return Math.max(1, poolSize - 1);
}

/**
 * How a consumer applies its partitions: unset, a fetch's partitions together (one transaction per table, kafkajs
 * handing out the whole fetch at once); set, that many partitions at once, each in a transaction of its own. Pure.
 */
export function applyMode(setting: number | undefined): { together: boolean; kafkaConcurrency: number } {
  return setting === undefined ? { together: true, kafkaConcurrency: FETCH_TOGETHER_WIDTH } : { together: false, kafkaConcurrency: setting };
}

/** The bytes a consumer's fetch takes, per partition and as a whole (undefined: kafkajs' 10 MiB). Pure. */
export function fetchLimits(target: { partitionsConsumedConcurrently?: number | undefined; fetchMaxBytesPerPartition: number }): { maxBytesPerPartition: number; maxBytes: number | undefined } {
  const together = applyMode(target.partitionsConsumedConcurrently).together;
  return { maxBytesPerPartition: target.fetchMaxBytesPerPartition, maxBytes: together ? FETCH_TOGETHER_PARTITIONS * target.fetchMaxBytesPerPartition : undefined };
}

export const targetSchema = z.strictObject({
  name: name.describe('Name of this target.'),
  database: name.describe('Name of the target database (see databases).'),
  schema: identifier.default('highwater').describe('Schema of the target tables.'),
  groupId: z.string().min(1).optional().describe('Consumer group id; default highwater.<target name>.'),
  tables: z.array(name).optional().describe('Tables to apply; default every configured table.'),
  batchMaxRecords: z.number().int().min(1).max(100_000).default(5000).describe('Most records of one partition applied in one transaction (a fetch\'s partitions applied together: at most this many of each).'),
  partitionsConsumedConcurrently: z.number().int().min(1).max(32).optional()
    .describe(`Unset (the default): the partitions of one fetch are applied together, one transaction per table over all of them, their records merged in the order they were produced, so a child whose parent went to another partition is written with it rather than held. Set: that many partitions applied at once, each batch in a transaction of its own (the next batch of a partition waits for the one before); each holds a target connection while it writes, and one more is kept for the held-children resolver, the retry topic and position reads: at most the target database's poolSize - 1 (or 1). Measured in docs/benchmarks.md.`),
  fetchMaxBytesPerPartition: z.number().int().min(64 * 1024).max(64 * 1024 * 1024).default(8 * 1024 * 1024)
    .describe(`Most bytes one fetch takes from one partition of a table topic (a larger record still comes whole). A fetch as a whole takes up to ${FETCH_TOGETHER_PARTITIONS} times this when a fetch's partitions are applied together (partitionsConsumedConcurrently unset), so that a table's partitions come in the same fetch and a child is applied with its parent; otherwise kafkajs' 10 MiB, and each partition is applied in transactions of at most batchMaxRecords before the next is read. Larger fetches mean larger transactions and more memory per consumer (1 MiB blobs applied at half the rate with 1 MiB as with 8). Measured in docs/benchmarks.md.`),
  sessionTimeoutMs: z.number().int().min(1000).max(300_000).default(30_000)
    .describe('Kafka group session timeout of the consumers: how long a member that stopped heartbeating (killed, frozen, cut off) keeps its partitions before they move to another member, and how long a restarted consumer may wait for its own dead predecessor. Must exceed the longest apply of one batch (a member that misses its heartbeats for longer is removed and its batch is applied again by the next owner). The broker bounds it by group.min/max.session.timeout.ms (6 s to 30 min by default).'),
  retry: defaulted(z.strictObject({
    maxAttempts: z.number().int().min(1).max(100).default(8).describe('Attempts for a child held for its missing parent (counted once the consumer has caught up) or a row whose content is incomplete, before it is copied to the dead-letter topic.'),
    backfillAfterAttempts: z.number().int().min(1).max(100).default(2).describe('Attempt at which a back-fill of the missing parent (or of the row, for incomplete content) is requested from the poller.'),
    initialDelayMs: z.number().int().min(0).default(2000).describe('Delay before the first attempt; doubles each attempt.'),
    maxDelayMs: z.number().int().min(0).default(300_000).describe('Longest delay between retries.'),
  }))
    .describe('Policy for rows waiting for a missing parent or for their content.'),
});

export const configSchema = z.strictObject({
  controlStore: z.strictObject({
    database: name.describe('Name of the PostgreSQL database (see databases) that holds the control store.'),
    schema: identifier.default('highwater_control').describe('Schema of the control store tables.'),
  }).describe('Where runs, high-watermarks, leases and the published-state registry live.'),
  kafka: defaulted(kafkaSchema).describe('Kafka connection and topic settings.'),
  encoding: defaulted(encodingSchema).describe('How event values are encoded.'),
  databases: z.array(databaseSchema).min(1).describe('Every database highwater talks to: sources, targets, control store.'),
  tables: z.array(tableSchema).default([]).describe('Tables the poller publishes.'),
  targets: z.array(targetSchema).default([]).describe('Targets the consumers apply to.'),
  excludedKeys: z.array(z.string()).default([]).describe('Keys never replicated, in any table.'),
  poll: defaulted(z.strictObject({
    intervalSeconds: z.number().int().min(1).default(300).describe('Interval between polls with `poll --every`.'),
    leaseSeconds: z.number().int().min(10).default(600).describe('Lease duration; renewed while a poll runs.'),
    inlineContentMaxBytes: z.number().int().min(0).default(65_536).describe('Content up to this size is read inside the page query; larger content is read separately in slices.'),
    maxBlobBytes: z.number().int().min(1).max(MAX_CONTENT_BYTES.sqlserver).default(MAX_CONTENT_BYTES.postgres)
      .describe(`Largest blob published; a larger one is refused and recorded against the run. At most ${MAX_CONTENT_BYTES.postgres} bytes when a PostgreSQL target is configured (bytea holds 1 GiB), ${MAX_CONTENT_BYTES.sqlserver} for SQL Server.`),
    deleteSweepKeys: z.number().int().min(0).default(10_000).describe('Registered keys checked for deletion per table per poll (0 turns the sweep off).'),
    lateSweepKeys: z.number().int().min(0).default(10_000).describe('Source keys checked per table per poll for changes the windows cannot see (committed later than the safety buffer covers, restored with their old ModifiedOn, or changed while ModifiedOn stayed), which are reported and republished; also the rows with a NULL ModifiedOn replicated per poll (0 turns both off).'),
    verifySweepBytes: z.number().int().min(0).default(256 * 1024 * 1024).describe('Content the late-arrival sweep has the source database hash per table per poll, at most (the first key of a range always is): how fast changes that kept their ModifiedOn are found on a large table.'),
  }))
    .describe('Poller behaviour.'),
  metrics: defaulted(z.strictObject({
    enabled: z.boolean().default(false).describe('Serve /metrics, /healthz and /readyz from `poll --every`, `consume` and `run`, each on the port of its role (metrics.ports), so several roles on one host do not collide. Setting port, HIGHWATER_METRICS_PORT or --metrics-port also turns it on.'),
    port: z.number().int().min(0).max(65535).nullable().default(null).describe('One port for every role (for one highwater process per host or container); null: the per-role ports. Env: HIGHWATER_METRICS_PORT; flag: --metrics-port (both win).'),
    ports: defaulted(z.strictObject({
      poll: z.number().int().min(0).max(65535).default(9464).describe('Port of `poll --every`.'),
      consume: z.number().int().min(0).max(65535).default(9465).describe('Port of `consume`.'),
      run: z.number().int().min(0).max(65535).default(9466).describe('Port of `run`.'),
    })).describe('Per-role ports, used when enabled and port is null.'),
  })).describe('Metrics and health endpoint.'),
  log: defaulted(z.strictObject({
    level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info').describe('Log level. Env: HIGHWATER_LOG_LEVEL.'),
  })).describe('Logging.'),
}).superRefine(checkReferences);

function checkReferences(cfg: { databases: { name: string; kind: string; poolSize: number }[]; tables: { name: string; source: string }[]; targets: { database: string; tables?: string[] | undefined; partitionsConsumedConcurrently?: number | undefined }[]; controlStore: { database: string }; poll: { maxBlobBytes: number } }, ctx: z.RefinementCtx): void {
  const dbs = new Map(cfg.databases.map((d) => [d.name, d.kind]));
  const tableNames = new Set(cfg.tables.map((t) => t.name));
  reportDuplicates(cfg.databases.map((d) => d.name), ['databases'], ctx);
  reportDuplicates(cfg.tables.map((t) => t.name), ['tables'], ctx);
  if (!dbs.has(cfg.controlStore.database)) ctx.addIssue({ code: 'custom', path: ['controlStore', 'database'], message: `no database named ${JSON.stringify(cfg.controlStore.database)}` });
  else if (dbs.get(cfg.controlStore.database) !== 'postgres') ctx.addIssue({ code: 'custom', path: ['controlStore', 'database'], message: 'the control store must be a PostgreSQL database' });
  cfg.tables.forEach((t, i) => {
    if (!dbs.has(t.source)) ctx.addIssue({ code: 'custom', path: ['tables', i, 'source'], message: `no database named ${JSON.stringify(t.source)}` });
  });
  cfg.targets.forEach((t, i) => {
    if (!dbs.has(t.database)) ctx.addIssue({ code: 'custom', path: ['targets', i, 'database'], message: `no database named ${JSON.stringify(t.database)}` });
    const poolSize = cfg.databases.find((d) => d.name === t.database)?.poolSize;
    if (poolSize !== undefined && t.partitionsConsumedConcurrently !== undefined && t.partitionsConsumedConcurrently > mostConcurrentPartitions(poolSize)) {
      ctx.addIssue({ code: 'custom', path: ['targets', i, 'partitionsConsumedConcurrently'], message: `is ${t.partitionsConsumedConcurrently}, but database ${JSON.stringify(t.database)} has poolSize ${poolSize}: at most ${mostConcurrentPartitions(poolSize)} (a connection per partition, and one for the held-children resolver, the retry topic and position reads); raise poolSize or lower this` });
    }
    const kind = dbs.get(t.database) as keyof typeof MAX_CONTENT_BYTES | undefined;
    if (kind !== undefined && kind in MAX_CONTENT_BYTES && cfg.poll.maxBlobBytes > MAX_CONTENT_BYTES[kind]) {
      ctx.addIssue({ code: 'custom', path: ['poll', 'maxBlobBytes'], message: `is ${cfg.poll.maxBlobBytes}, but target ${JSON.stringify(t.database)} (${kind}) stores at most ${MAX_CONTENT_BYTES[kind]} bytes in one value` });
    }
    (t.tables ?? []).forEach((name, j) => {
      if (!tableNames.has(name)) ctx.addIssue({ code: 'custom', path: ['targets', i, 'tables', j], message: `no table named ${JSON.stringify(name)}` });
    });
  });
}

function reportDuplicates(names: string[], path: (string | number)[], ctx: z.RefinementCtx): void {
  const seen = new Set<string>();
  names.forEach((n, i) => {
    if (seen.has(n)) ctx.addIssue({ code: 'custom', path: [...path, i, 'name'], message: `duplicate name ${JSON.stringify(n)}` });
    seen.add(n);
  });
}

export type Config = z.output<typeof configSchema>;
export type TableConfig = Config['tables'][number];
export type TargetConfig = Config['targets'][number];
export type DatabaseConfig = Config['databases'][number];
export type KafkaConfig = Config['kafka'];
