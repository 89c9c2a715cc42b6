import type pg from 'pg';
import type mssql from 'mssql';
import { postgresSourceQueries, sourceDigest } from '../connectors/postgres/reconcile.js';
import { createPgPool, PostgresSource } from '../connectors/postgres/source.js';
import { sqlServerSourceQueries } from '../connectors/sqlserver/reconcile.js';
import { createMssqlPool, SqlServerSource } from '../connectors/sqlserver/source.js';
import { targetTableName as pgTargetTableName } from '../consumers/postgres/dialect.js';
import { postgresTargetQueries, targetDigest } from '../consumers/postgres/reconcile.js';
import { PostgresWriter } from '../consumers/postgres/writer.js';
import { targetTableName as mssqlTargetTableName } from '../consumers/sqlserver/dialect.js';
import { sqlServerTargetQueries } from '../consumers/sqlserver/reconcile.js';
import { SqlServerWriter } from '../consumers/sqlserver/writer.js';
import { ApplyLoop, type ApplyLoopDeps, type TopicBinding } from './apply/loop.js';
import { RetryLoop } from './apply/retry-loop.js';
import { HeldResolver } from './apply/held.js';
import { lagOf, topicEnds } from './apply/offsets.js';
import { connectionStringOf, databaseByName, dlqTopicFor, groupIdFor, retryTopicFor, tablesForTarget, topicFor, backfillTopic } from './config/load.js';
import { applyMode, fetchLimits, type Config, type DatabaseConfig, type TableConfig, type TargetConfig } from './config/schema.js';
import { ControlStore } from './control/store.js';
import { createCodec, type EventCodec } from './events/codec.js';
import { inlineLimit } from './events/records.js';
import { createKafka, withKafkaErrors } from './kafka/client.js';
import { probeKafka } from './kafka/probe.js';
import { withRetry } from './retry.js';
import { ManualConsumer } from './kafka/consumer.js';
import { Publisher } from './kafka/publisher.js';
import { describeTopicSettings, ensureTopics, sideTopicSpec, tableTopicSpec, topicSettingProblems, type TopicSpec } from './kafka/topics.js';
import type { Logger } from './logger.js';
import { PollerObserver, type PollerListener } from './poll/observer.js';
import { Poller } from './poll/poller.js';
import { BackfillService } from './poll/backfill.js';
import type { SourceConnector, SourceTableSpec } from './poll/source/connector.js';
import type { TargetWriter } from './apply/sink/writer.js';
import type { Admin, Kafka } from './kafka/client.js';
import { startObservability, type Observability, type ObserveOptions } from './metrics/observe.js';


/** The most a back-fill request record can take (a table, a tenant, a parent and a few keys). */
const BACKFILL_REQUEST_MAX_BYTES = 64 * 1024;
/**
 * The composition root: the one place that turns configuration into connected components. src/ imports the
 * engine folders (connectors/, consumers/) only here.
 */

/** The SQL name of a configured table in a target of this engine (each engine's dialect names it). */
export function targetTableNameFor(kind: DatabaseConfig['kind'], name: string): string {
  return kind === 'postgres' ? pgTargetTableName(name) : mssqlTargetTableName(name);
}

/**
 * Each engine's reconciliation queries, per side and database kind. The statement types differ by engine, so the
 * caller pairs them with the executor of the same kind (src/db/).
 */
export const reconcileQueries = {
  postgres: { source: postgresSourceQueries, target: postgresTargetQueries },
  sqlserver: { source: sqlServerSourceQueries, target: sqlServerTargetQueries },
} as const satisfies Record<DatabaseConfig['kind'], unknown>;

/** Whole-table digests of a PostgreSQL source and target, for the demo's verdict (the demo runs on PostgreSQL). */
export const postgresDigests = { source: sourceDigest, target: targetDigest } as const;

export class Runtime {
  readonly kafka: Kafka;
  readonly codec: EventCodec;
  private readonly pgPools = new Map<string, pg.Pool>();
  private readonly mssqlPools = new Map<string, Promise<mssql.ConnectionPool>>();
  private readonly sources = new Map<string, SourceConnector>();
  private publisherInstance: Publisher | undefined;
  private storeInstance: ControlStore | undefined;
  private readonly closers: (() => Promise<void>)[] = [];
  private kafkaProbe: Promise<void> | undefined;

  constructor(readonly config: Config, readonly logger: Logger) {
    this.kafka = createKafka(config.kafka, logger);
    this.codec = createCodec(config.encoding);
  }

  pgPool(db: DatabaseConfig): pg.Pool {
    let pool = this.pgPools.get(db.name);
    if (!pool) {
      pool = createPgPool(connectionStringOf(db), db.poolSize);
      pool.on('error', (err) => this.logger.warn({ err, database: db.name }, 'idle PostgreSQL connection failed; the pool replaces it'));
      this.pgPools.set(db.name, pool);
    }
    return pool;
  }

  mssqlPool(db: DatabaseConfig): Promise<mssql.ConnectionPool> {
    let pool = this.mssqlPools.get(db.name);
    if (!pool) {
      pool = createMssqlPool(connectionStringOf(db), db.poolSize);
      this.mssqlPools.set(db.name, pool);
    }
    return pool;
  }

  /**
   * The control store has a pool of its own even when it lives in a source database: an observation holds a
   * control-store connection while the source is read, so sharing one pool could leave that read without a
   * connection.
   */
  store(): ControlStore {
    if (!this.storeInstance) {
      const db = databaseByName(this.config, this.config.controlStore.database);
      const pool = createPgPool(connectionStringOf(db), db.poolSize);
      pool.on('error', (err) => this.logger.warn({ err, database: db.name }, 'idle control-store connection failed; the pool replaces it'));
      this.closers.push(() => pool.end());
      this.storeInstance = new ControlStore(pool, this.config.controlStore.schema);
    }
    return this.storeInstance;
  }

  /**
   * Resolves once a broker has answered, or fails after kafka.startupTimeoutMs with one line naming the brokers.
   * Every first use of Kafka goes through it, so an unreachable broker is reported before anything else happens.
   */
  kafkaReady(): Promise<void> {
    this.kafkaProbe ??= probeKafka(this.config.kafka);
    return this.kafkaProbe;
  }

  async publisher(): Promise<Publisher> {
    await this.kafkaReady();
    this.publisherInstance ??= new Publisher(this.kafka, this.config.kafka.maxMessageBytes);
    await this.publisherInstance.connect();
    return this.publisherInstance;
  }

  async source(table: TableConfig): Promise<SourceConnector> {
    let source = this.sources.get(table.name);
    if (!source) {
      const db = databaseByName(this.config, table.source);
      const spec = sourceSpec(this.config, table);
      source = db.kind === 'postgres' ? new PostgresSource(this.pgPool(db), spec) : new SqlServerSource(await this.mssqlPool(db), spec);
      this.sources.set(table.name, source);
    }
    return source;
  }

  async writer(target: TargetConfig): Promise<TargetWriter> {
    const db = databaseByName(this.config, target.database);
    const tables = tablesForTarget(this.config, target).map((t) => ({ name: t.name }));
    // Writers own their pool (close() ends it), so each gets a pool of its own.
    if (db.kind === 'postgres') return new PostgresWriter(createPgPool(connectionStringOf(db), db.poolSize), { schema: target.schema, tables });
    return new SqlServerWriter(await createMssqlPool(connectionStringOf(db), db.poolSize), { schema: target.schema, tables });
  }

  /** The table topic plus its retry and dead-letter topics, and the shared back-fill request topic. */
  async ensureTableTopics(table: TableConfig): Promise<void> {
    await this.kafkaReady();
    await this.withAdmin((admin) => ensureTopics(admin, this.topicSpecs(table), this.config.kafka.replicationFactor));
  }

  /** What is wrong with the settings of a table's topics that exist already (preflight); empty when nothing is. */
  async topicProblems(table: TableConfig): Promise<string[]> {
    await this.kafkaReady();
    const specs = this.topicSpecs(table);
    const settings = await this.withAdmin((admin) => describeTopicSettings(admin, specs.map((s) => s.topic)));
    return specs.flatMap((spec) => {
      const actual = settings.get(spec.topic);
      return actual === undefined ? [] : topicSettingProblems(spec, actual, this.largestRecordOf(spec.topic));
    });
  }

  /**
   * The largest record highwater writes to a topic: kafka.maxMessageBytes, except on the back-fill request topic.
   * That one is shared by every deployment on the cluster (one name) and was created by whichever came first, with
   * its kafka.maxMessageBytes; its records are requests of a few keys, so another deployment's larger limit must not
   * make it "too small" (a test suite sharing one broker failed init on it, depending on file order).
   */
  private largestRecordOf(topic: string): number {
    return topic === backfillTopic() ? Math.min(BACKFILL_REQUEST_MAX_BYTES, this.config.kafka.maxMessageBytes) : this.config.kafka.maxMessageBytes;
  }

  private topicSpecs(table: TableConfig): TopicSpec[] {
    const topic = topicFor(this.config, table);
    const k = this.config.kafka;
    return [tableTopicSpec(topic, k), sideTopicSpec(retryTopicFor(topic), k), sideTopicSpec(dlqTopicFor(topic), k), sideTopicSpec(backfillTopic(), k, 1)];
  }

  private async withAdmin<T>(work: (admin: Admin) => Promise<T>): Promise<T> {
    const admin = this.kafka.admin();
    await withKafkaErrors('connecting the admin client', () => admin.connect());
    try {
      return await work(admin);
    } finally {
      await admin.disconnect();
    }
  }

  async poller(options: { listeners?: PollerListener[]; signal?: AbortSignal; countWindows?: boolean } = {}): Promise<Poller> {
    const sources = new Map<string, SourceConnector>();
    for (const t of this.config.tables.filter((t) => t.enabled)) sources.set(t.name, await this.source(t));
    return new Poller({
      config: this.config,
      store: this.store(),
      publisher: await this.publisher(),
      codec: this.codec,
      logger: this.logger.child({ component: 'poller' }),
      observer: new PollerObserver(options.listeners ?? [], (err) => this.logger.warn({ err }, 'a poller observer failed')),
      sourceFor: (t) => sources.get(t.name)!,
      ensureTopics: (t) => this.ensureTableTopics(t),
      ...(options.signal ? { signal: options.signal } : {}),
      countWindows: options.countWindows === true,
    });
  }

  bindings(target: TargetConfig): TopicBinding[] {
    return tablesForTarget(this.config, target).map((t) => {
      const topic = topicFor(this.config, t);
      return { table: t.name, topic, retryTopic: retryTopicFor(topic), dlqTopic: dlqTopicFor(topic) };
    });
  }

  /** Starts the main and retry consumers of one target; resolves once both are running. */
  async startConsumers(target: TargetConfig, options: { onApplied?: ApplyLoopDeps['onApplied']; onBackfillRequested?: (table: string) => void } = {}): Promise<RunningConsumers> {
    await this.kafkaReady();
    const writer = await this.writer(target);
    await writer.migrate();
    for (const t of tablesForTarget(this.config, target)) await this.ensureTableTopics(t);
    const groupId = groupIdFor(target);
    const bindings = this.bindings(target);
    const publisher = await this.publisher();
    const logger = this.logger.child({ component: 'consumer', target: target.name, groupId });
    const mode = applyMode(target.partitionsConsumedConcurrently);
    const loop = new ApplyLoop({
      groupId, bindings, writer, codec: this.codec, publisher, logger,
      batchMaxRecords: target.batchMaxRecords, retryDelayMs: target.retry.initialDelayMs, applyFetchTogether: mode.together,
      ...(options.onApplied ? { onApplied: options.onApplied } : {}),
    });
    const main = new ManualConsumer(this.kafka, {
      groupId,
      topics: bindings.map((b) => b.topic),
      positionOf: async (topic, partition) => (await writer.storedOffsets(groupId, [topic])).find((o) => o.partition === partition)?.nextOffset ?? null,
      onAssigned: () => loop.forgetPositions(),
      partitionsConsumedConcurrently: mode.kafkaConcurrency,
      ...fetchLimits(target),
      onPositionFailed: (err) => logger.error({ err, groupId }, 'could not position the assigned partitions from the target; they stay paused until the next assignment'),
      onRestart: (err, delayMs) => logger.warn({ err, groupId, delayMs }, 'the Kafka cluster stayed unreachable longer than the client retries; the consumer starts again after a pause'),
      sessionTimeoutMs: target.sessionTimeoutMs,
    });
    loop.attach(main);
    const retry = new RetryLoop({
      groupId, bindings, writer, codec: this.codec, publisher, logger: logger.child({ component: 'retry' }), policy: target.retry, requestedBy: target.name,
      ...(options.onApplied ? { onApplied: options.onApplied } : {}),
      ...(options.onBackfillRequested ? { onBackfillRequested: options.onBackfillRequested } : {}),
    });
    const retryConsumer = new ManualConsumer(this.kafka, {
      groupId: `${groupId}.retry`,
      topics: bindings.map((b) => b.retryTopic),
      positionOf: async (topic, partition) => (await writer.storedOffsets(groupId, [topic])).find((o) => o.partition === partition)?.nextOffset ?? null,
      onAssigned: () => retry.forgetPositions(),
      onPositionFailed: (err) => logger.error({ err, groupId: `${groupId}.retry` }, 'could not position the assigned partitions from the target; they stay paused until the next assignment'),
      onRestart: (err, delayMs) => logger.warn({ err, groupId: `${groupId}.retry`, delayMs }, 'the Kafka cluster stayed unreachable longer than the client retries; the consumer starts again after a pause'),
      sessionTimeoutMs: target.sessionTimeoutMs,
    });
    retry.attach(retryConsumer);
    const admin = this.kafka.admin();
    await withKafkaErrors('connecting the admin client of the held-children resolver', () => admin.connect());
    const held = new HeldResolver({
      bindings, writer, codec: this.codec, publisher, logger: logger.child({ component: 'held' }), policy: target.retry, requestedBy: target.name,
      partitions: async (topics) => lagOf(await writer.storedOffsets(groupId, topics), await topicEnds(admin, topics)),
      ...(options.onBackfillRequested ? { onBackfillRequested: options.onBackfillRequested } : {}),
    });
    await main.start((batch) => loop.handle(batch));
    await retryConsumer.start((batch) => retry.handle(batch));
    held.start();
    return {
      writer,
      groupId,
      failed: Promise.race([main.failed, retryConsumer.failed]),
      stop: async () => {
        await held.stop();
        await Promise.allSettled([main.stop(), retryConsumer.stop(), admin.disconnect()]);
        await writer.close();
      },
    };
  }

  /**
   * Starts the back-fill service of the poller side: consumes the request topic in its own group
   * (`<kafka.clientId>.backfill` unless given) and publishes the requested rows from the sources. Positions come
   * from the group's committed offsets in Kafka, which the service commits after each served request.
   */
  async startBackfill(options: { groupId?: string; pauseAfterFailureMs?: number } = {}): Promise<RunningBackfill> {
    await this.kafkaReady();
    const groupId = options.groupId ?? `${this.config.kafka.clientId}.backfill`;
    const logger = this.logger.child({ component: 'backfill', groupId });
    const admin = this.kafka.admin();
    const committed = async (topic: string, partition: number): Promise<bigint | null> => {
      try {
        const offsets = await withRetry(() => withKafkaErrors('reading committed back-fill offsets', () => admin.fetchOffsets({ groupId, topics: [topic] })));
        const offset = offsets[0]?.partitions.find((p) => p.partition === partition)?.offset;
        return offset === undefined || offset === '-1' ? null : BigInt(offset);
      } catch (err) {
        logger.error({ err }, 'cannot read the committed offsets; requests are read again from the start (serving one twice is harmless)');
        return null;
      }
    };
    const consumer = new ManualConsumer(this.kafka, { groupId, topics: [backfillTopic()], positionOf: committed });
    try {
      await withKafkaErrors('connecting the back-fill admin client', () => admin.connect());
      await ensureTopics(admin, [sideTopicSpec(backfillTopic(), this.config.kafka, 1)], this.config.kafka.replicationFactor);
      const service = new BackfillService({
        config: this.config, store: this.store(), publisher: await this.publisher(), codec: this.codec, logger,
        sourceFor: (t) => this.source(t),
        ...(options.pauseAfterFailureMs === undefined ? {} : { pauseAfterFailureMs: options.pauseAfterFailureMs }),
      });
      service.attach(consumer);
      await consumer.start((batch) => service.handle(batch));
    } catch (err) {
      await Promise.allSettled([consumer.stop(), admin.disconnect()]);
      throw err;
    }
    return {
      groupId,
      stop: async () => {
        await Promise.allSettled([consumer.stop(), admin.disconnect()]);
      },
    };
  }

  /**
   * Metrics, health and readiness for a long-running process (on the port its role resolved): readiness checks every
   * database in the configuration and Kafka; a sampler refreshes lag, leases and high-watermarks.
   */
  async observe(options: Omit<ObserveOptions, 'sampleEveryMs'>): Promise<Observability> {
    let admin: Promise<Admin> | undefined;
    const kafkaAdmin = () => (admin ??= (async () => {
      const a = this.kafka.admin();
      await a.connect();
      this.closers.push(() => a.disconnect());
      return a;
    })());
    const databases = Object.fromEntries(this.config.databases.filter((d) => d.connectionString).map((d) => [`database:${d.name}`, async () => {
      if (d.kind === 'postgres') await this.pgPool(d).query('SELECT 1');
      else await (await this.mssqlPool(d)).request().query('SELECT 1');
    }]));
    // One writer per target, kept for the sampler's consistent_as_of reads and closed with the runtime.
    const writers = new Map<string, Promise<TargetWriter>>();
    const consistentAsOf = async (target: TargetConfig) => {
      let writer = writers.get(target.name);
      if (!writer) {
        writer = this.writer(target);
        writers.set(target.name, writer);
        this.closers.push(async () => (await writer!).close());
      }
      return (await writer).consistentAsOf(groupIdFor(target));
    };
    const observability = await startObservability(this.config, this.logger.child({ component: 'metrics' }), { kafkaAdmin, store: this.store(), databases, consistentAsOf }, options);
    this.closers.push(() => observability.stop());
    return observability;
  }

  async close(): Promise<void> {
    for (const close of this.closers.splice(0).reverse()) await close().catch(() => undefined);
    await this.publisherInstance?.disconnect();
    for (const s of this.sources.values()) await s.close().catch(() => undefined);
    await Promise.allSettled([...this.pgPools.values()].map((p) => p.end()));
    await Promise.allSettled([...this.mssqlPools.values()].map(async (p) => (await p).close()));
  }
}

export interface RunningBackfill {
  readonly groupId: string;
  stop(): Promise<void>;
}

export interface RunningConsumers {
  readonly writer: TargetWriter;
  readonly groupId: string;
  /** Resolves when the main or the retry consumer stopped for good on an error it cannot retry. */
  readonly failed: Promise<Error>;
  stop(): Promise<void>;
}

export function sourceSpec(cfg: Config, table: TableConfig): SourceTableSpec {
  return {
    blob: table.blob,
    metadata: table.metadata,
    keyColumn: table.keyColumn,
    modifiedOnColumn: table.modifiedOnColumn,
    columns: table.columns,
    businessUnit: table.businessUnit,
    inlineContentMaxBytes: Math.min(cfg.poll.inlineContentMaxBytes, inlineLimit(cfg.kafka.maxMessageBytes)),
    maxdop: table.maxdop,
  };
}
