/**
 * One seed of the convergence test, end to end on the real services: a fresh PostgreSQL source and target, a
 * compacted table topic on the real broker, `highwater init`, the audit trigger, then the poller (`poll --every`)
 * and the consumers (`consume`) as child processes while the seed's history is applied to the source and the
 * processes are killed and restarted at the history's moments. Once the pipeline has drained, I1–I4 are checked
 * with the test's own SQL; then a fresh target is filled from the same topic after compaction removed offsets, and
 * checked the same way.
 *
 * Nothing here depends on Vitest, so the npm script and the integration test share it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import pg from 'pg';
import { dlqTopicFor, retryTopicFor } from '../../src/config/load.js';
import { quotePg } from '../../src/sql/ident.js';
import { sqlTableName } from '../../src/apply/sink/batch.js';
import { describeOp, generateHistory, SHAPES, type History, type Op, type SizeName } from './history.js';
import { checkInvariants, formatReport, installAuditTrigger, type InvariantReport, type ReplicatedTable } from './invariants.js';
import { CliProcess, CrashSchedule, runCli } from './processes.js';
import { createSource, replicatedTable, SourceWriter } from './source.js';

export interface ConvergenceEnv {
  /** A PostgreSQL server the test may create and drop databases on. */
  readonly pgUrl: string;
  readonly brokers: readonly string[];
  /** Config files, process logs and histories of every seed go below this directory. */
  readonly workDir: string;
  readonly log: (line: string) => void;
}

export interface SeedOptions {
  readonly seed: number;
  readonly size: SizeName;
  /** Fill a fresh target from the compacted topic too (default true). */
  readonly rebuild?: boolean;
}

export interface SeedResult {
  readonly seed: number;
  readonly size: SizeName;
  readonly ok: boolean;
  readonly seconds: number;
  readonly ops: number;
  readonly kills: { readonly poller: number; readonly consumer: number };
  readonly live: InvariantReport | null;
  readonly rebuild: InvariantReport | null;
  /** Offsets compaction removed from the table topic before the fresh target read it (null: no rebuild). */
  readonly missingOffsets: number | null;
  /** Exits of the poller or consumers nobody asked for. */
  readonly unexpectedExits: readonly string[];
  readonly problems: readonly string[];
  readonly dir: string;
}

const TABLE = 'Attachments';
const OP_GAP_MS = 300;
const TARGET_SCHEMA = 'tgt';
const PARTITIONS = 3;
const TOPIC_CONFIG: Readonly<Record<string, string>> = {
  // Compaction that really happens during a seed: small segments rolled every 100 ms, cleaned at once. Tombstones
  // are kept long (the default is a day): a consumer may lag behind a crash for a group session timeout, and Kafka
  // only promises it the deletes it reads within delete.retention.ms.
  'cleanup.policy': 'compact', 'segment.ms': '100', 'segment.bytes': '8388608', 'min.cleanable.dirty.ratio': '0.01',
  'min.compaction.lag.ms': '0', 'max.compaction.lag.ms': '1000', 'delete.retention.ms': '600000',
};

export async function runSeed(env: ConvergenceEnv, options: SeedOptions): Promise<SeedResult> {
  const started = Date.now();
  const history = generateHistory(options.seed, SHAPES[options.size]);
  const run = new SeedRun(env, history, options);
  let problems: string[] = [];
  try {
    await run.execute();
  } catch (err) {
    problems.push(`error: ${(err as Error).stack ?? String(err)}`);
  } finally {
    await run.stopProcesses();
  }
  problems = [...run.problems, ...problems];
  const ok = problems.length === 0 && run.live?.ok === true && (options.rebuild === false || run.rebuilt?.ok === true);
  const result: SeedResult = {
    seed: options.seed, size: options.size, ok, seconds: (Date.now() - started) / 1000, ops: history.ops.length,
    kills: { poller: run.poller?.kills ?? 0, consumer: run.consumer?.kills ?? 0 },
    live: run.live, rebuild: run.rebuilt, missingOffsets: run.missingOffsets,
    unexpectedExits: [...(run.poller?.unexpectedExits ?? []), ...(run.consumer?.unexpectedExits ?? []), ...(run.rebuildConsumer?.unexpectedExits ?? [])],
    problems, dir: run.dir,
  };
  await run.finish(result);
  return result;
}

class SeedRun {
  readonly dir: string;
  readonly problems: string[] = [];
  poller: CliProcess | null = null;
  consumer: CliProcess | null = null;
  rebuildConsumer: CliProcess | null = null;
  live: InvariantReport | null = null;
  rebuilt: InvariantReport | null = null;
  missingOffsets: number | null = null;
  private readonly suffix = randomBytes(3).toString('hex');
  private readonly names: { src: string; tgt: string; tgt2: string; topic: string; group: string; group2: string };
  private readonly pools: pg.Pool[] = [];
  private readonly admin: pg.Pool;
  private readonly kafka: Kafka;
  private readonly table: ReplicatedTable;

  constructor(private readonly env: ConvergenceEnv, private readonly history: History, private readonly options: SeedOptions) {
    const base = `hw_cv_${history.seed}_${this.suffix}`;
    this.names = {
      src: `${base}_src`, tgt: `${base}_tgt`, tgt2: `${base}_fresh`,
      topic: `hw-cv-${history.seed}-${this.suffix}`, group: `hw-cv-${history.seed}-${this.suffix}-live`, group2: `hw-cv-${history.seed}-${this.suffix}-fresh`,
    };
    this.dir = join(env.workDir, `seed-${history.seed}-${this.suffix}`);
    this.admin = this.pool(env.pgUrl, 2);
    this.kafka = new Kafka({ clientId: 'highwater-convergence', brokers: [...env.brokers], logLevel: logLevel.NOTHING });
    this.table = replicatedTable([history.excludedKey.toUpperCase()], { schema: TARGET_SCHEMA, table: sqlTableName(TABLE, 54) });
  }

  private log(line: string): void {
    this.env.log(`[seed ${this.history.seed}] ${line}`);
  }

  async execute(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, 'history.txt'), this.history.ops.map((op, i) => `${i}\t${describeOp(op)}`).join('\n') + '\n');
    const src = await this.database(this.names.src);
    const tgt = await this.database(this.names.tgt);
    await createSource(src);
    await this.withAdmin((a) => createTopic(a, this.names.topic));
    const liveConfig = await this.writeConfig('live', this.names.tgt, this.names.group);
    await runCli(['--config', liveConfig, 'init'], join(this.dir, 'init.log'));
    await installAuditTrigger(tgt, this.table);
    this.consumer = new CliProcess('consumer', ['--config', liveConfig, 'consume'], join(this.dir, 'consumer.log'));
    this.poller = new CliProcess('poller', ['--config', liveConfig, 'poll', '--every'], join(this.dir, 'poller.log'));
    this.consumer.start();
    this.poller.start();
    // The processes take seconds to start (tsx, connections, group join): a history applied before they run would
    // reach them as its final state only, with no intermediate state observed.
    await this.until('the poller completes its first run', 180_000, async () => (await completedRuns(tgt)) >= 1);
    await this.until('the consumer joins its group', 180_000, () => logContains(join(this.dir, 'consumer.log'), 'consuming; SIGINT or SIGTERM stops'));
    await this.applyHistory(src);
    await this.drain(src, tgt, this.names.group);
    this.live = await this.settledReport(src, tgt, 'live target');
    if (this.options.rebuild !== false) await this.rebuild(src);
  }

  private async applyHistory(src: pg.Pool): Promise<void> {
    const crashes = new CrashSchedule({ poller: this.poller!, consumer: this.consumer! }, (line) => this.log(line));
    const writer = new SourceWriter(src, this.url(this.names.src), this.history.shape.bufferMs, crashes);
    try {
      for (const [i, op] of this.history.ops.entries()) {
        await writer.apply(op);
        // Spread the history over time, so that polls (every second, a 2 s buffer) observe intermediate states.
        if (op.kind !== 'pause' && op.kind !== 'kill') await sleep(OP_GAP_MS);
        this.reviveCrashed();
        if (i % 20 === 0) this.log(`op ${i}/${this.history.ops.length}: ${describeOp(op)}`);
      }
      await crashes.settled();
    } finally {
      await writer.close();
    }
  }

  /** A process that exited by itself is a finding (recorded), and is started again so the seed can finish. */
  private reviveCrashed(): void {
    for (const p of [this.poller, this.consumer, this.rebuildConsumer]) p?.reviveIfDead();
  }

  /**
   * Drained: the poller's high-watermark passed the last source write and two more polls completed after that
   * (their delete, NULL and late-arrival sweeps saw the final source), then the target's stored offsets reached
   * the topic's end as it was then, and no row waits in the retry topic.
   */
  private async drain(src: pg.Pool, tgt: pg.Pool, group: string): Promise<void> {
    const lastWrite = await sourceTicks(src);
    await this.until('the poller passes the last write', 180_000, async () => (await highWater(tgt)) >= lastWrite);
    const runs = await completedRuns(tgt);
    await this.until('two more polls complete', 120_000, async () => (await completedRuns(tgt)) >= runs + 2);
    await this.consumed(tgt, group);
  }

  private async consumed(tgt: pg.Pool, group: string): Promise<void> {
    const ends = await this.withAdmin((a) => a.fetchTopicOffsets(this.names.topic));
    await this.until(`the consumers reach the end of ${this.names.topic}`, 240_000, async () => {
      const stored = await storedOffsets(tgt, group, this.names.topic);
      return ends.every((e) => BigInt(e.high) === 0n || (stored.get(e.partition) ?? -1n) >= BigInt(e.high));
    });
    await this.until('no row is parked in the retry topic', 120_000, async () => (await parked(tgt)) === 0);
  }

  /** The invariants once the pipeline drained; rows still in flight (retries) get up to a minute to land. */
  private async settledReport(src: pg.Pool, tgt: pg.Pool, label: string): Promise<InvariantReport> {
    const deadline = Date.now() + 60_000;
    let report = await checkInvariants({ source: src, target: tgt, table: this.table });
    while (!report.ok && Date.now() < deadline && (report.i2?.count ?? 0) === 0) {
      await sleep(3000);
      this.reviveCrashed();
      report = await checkInvariants({ source: src, target: tgt, table: this.table });
    }
    this.log(formatReport(report, label).split('\n')[0]!);
    return report;
  }

  /** A fresh target and consumer group fed from the topic once compaction has removed offsets from it. */
  private async rebuild(src: pg.Pool): Promise<void> {
    const tgt2 = await this.database(this.names.tgt2);
    const config = await this.writeConfig('fresh', this.names.tgt2, this.names.group2);
    await runCli(['--config', config, 'init'], join(this.dir, 'init-fresh.log'));
    await installAuditTrigger(tgt2, this.table);
    this.missingOffsets = await this.waitForCompaction(90_000);
    if (this.missingOffsets === 0) this.log('compaction removed no offset within 90 s: the fresh target reads an uncompacted topic');
    this.rebuildConsumer = new CliProcess('fresh consumer', ['--config', config, 'consume'], join(this.dir, 'consumer-fresh.log'));
    this.rebuildConsumer.start();
    await this.consumed(tgt2, this.names.group2);
    this.rebuilt = await this.settledReport(src, tgt2, 'fresh target');
  }

  /** Offsets missing from the table topic (compaction ran), read whole from the start; 0 if none by the deadline. */
  private async waitForCompaction(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const missing = await missingOffsets(this.kafka, this.names.topic);
      if (missing > 0 || Date.now() > deadline) return missing;
      await sleep(5000);
    }
  }

  private async until(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) {
        this.problems.push(`not drained: ${what} did not happen within ${timeoutMs / 1000} s`);
        return;
      }
      this.reviveCrashed();
      await sleep(500);
    }
  }

  async stopProcesses(): Promise<void> {
    await Promise.all([this.poller?.stop(), this.consumer?.stop(), this.rebuildConsumer?.stop()]);
  }

  /** Prints what failed (and the operations that touched each divergent key); cleans up only when the seed passed. */
  async finish(result: SeedResult): Promise<void> {
    if (!result.ok) {
      const lines = [`seed ${result.seed} (${result.size}) FAILED — replay with HIGHWATER_SEED=${result.seed}; kept ${this.dir}, databases ${this.names.src}, ${this.names.tgt}, ${this.names.tgt2}, topic ${this.names.topic}`];
      lines.push(...result.problems, ...result.unexpectedExits.map((e) => `unexpected exit: ${e}`));
      lines.push(...(await this.failedRuns()).map((e) => `poll runs failed: ${e}`));
      if (result.live) lines.push(formatReport(result.live, 'live target'));
      if (result.rebuild) lines.push(formatReport(result.rebuild, 'fresh target'));
      const keys = new Set([...(result.live ? divergentKeys(result.live) : []), ...(result.rebuild ? divergentKeys(result.rebuild) : [])]);
      for (const key of [...keys].slice(0, 10)) lines.push(`history of ${key}:`, ...opsTouching(this.history.ops, key).map((l) => `    ${l}`));
      const text = lines.join('\n');
      await writeFile(join(this.dir, 'failure.txt'), `${text}\n`).catch(() => undefined);
      this.env.log(text);
    }
    for (const pool of this.pools) await pool.end().catch(() => undefined);
    if (result.ok) {
      for (const db of [this.names.src, this.names.tgt, this.names.tgt2]) await this.admin.query(`DROP DATABASE IF EXISTS ${quotePg(db)} WITH (FORCE)`).catch(() => undefined);
      await this.withAdmin((a) => a.deleteTopics({ topics: [this.names.topic, retryTopicFor(this.names.topic), dlqTopicFor(this.names.topic)] })).catch(() => undefined);
    }
    await this.admin.end().catch(() => undefined);
  }

  /** Distinct errors of failed poll runs (a killed poller leaves some behind; anything else is worth reading). */
  private async failedRuns(): Promise<string[]> {
    const ctl = this.pools[1];
    if (!ctl) return [];
    const { rows } = await ctl.query<{ error: string; n: number }>(
      `SELECT left(coalesce(error, '(no error)'), 300) AS error, count(*)::int AS n FROM hw_control.runs WHERE status <> 'completed' GROUP BY 1 ORDER BY 2 DESC LIMIT 5`).catch(() => ({ rows: [] }));
    return rows.map((r) => `${r.n}× ${r.error}`);
  }

  private async writeConfig(name: string, targetDb: string, groupId: string): Promise<string> {
    const shape = this.history.shape;
    const config = {
      controlStore: { database: 'control', schema: 'hw_control' },
      kafka: { brokers: this.env.brokers, partitions: PARTITIONS, clientId: `hw-cv-${this.history.seed}-${name}`, maxMessageBytes: 65_536 },
      databases: [
        { name: 'source', kind: 'postgres', connectionString: this.url(this.names.src), poolSize: 3 },
        { name: 'control', kind: 'postgres', connectionString: this.url(this.names.tgt), poolSize: 2 },
        { name: 'target', kind: 'postgres', connectionString: this.url(targetDb), poolSize: 3 },
      ],
      tables: [{
        name: TABLE, source: 'source', topic: this.names.topic,
        blob: { schema: 'src', table: 'blobs' },
        metadata: { schema: 'src', table: 'meta', joinColumn: 'id' },
        businessUnit: { column: 'bu', mapTable: { schema: 'src', table: 'bu_map', idColumn: 'id' } },
        safetyBufferMinutes: shape.bufferMs / 60_000,
        batchSize: shape.pageSize,
        // Upper-cased: the poller and the back-fill must compare keys case-insensitively.
        excludedKeys: [this.history.excludedKey.toUpperCase()],
      }],
      targets: [{
        name: 'replica', database: 'target', schema: TARGET_SCHEMA, groupId,
        retry: { initialDelayMs: 200, maxDelayMs: 2000, maxAttempts: 60, backfillAfterAttempts: 3 },
      }],
      poll: { intervalSeconds: 1, leaseSeconds: 10, inlineContentMaxBytes: shape.inlineLimit },
      log: { level: 'info' },
    };
    const file = join(this.dir, `highwater-${name}.json`);
    await writeFile(file, JSON.stringify(config, null, 2));
    return file;
  }

  private url(db: string): string {
    const u = new URL(this.env.pgUrl);
    u.pathname = `/${db}`;
    return u.toString();
  }

  private pool(url: string, max = 4): pg.Pool {
    const pool = new pg.Pool({ connectionString: url, max });
    pool.on('error', () => undefined);
    return pool;
  }

  private async database(name: string): Promise<pg.Pool> {
    await this.admin.query(`CREATE DATABASE ${quotePg(name)}`);
    const pool = this.pool(this.url(name));
    this.pools.push(pool);
    return pool;
  }

  private async withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      return await fn(admin);
    } finally {
      await admin.disconnect();
    }
  }
}

async function createTopic(admin: Admin, topic: string): Promise<void> {
  // Without waitForLeaders (kafkajs bails on a lagging KRaft metadata cache); the first producer call waits instead.
  await admin.createTopics({
    waitForLeaders: false,
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1, configEntries: Object.entries(TOPIC_CONFIG).map(([name, value]) => ({ name, value })) }],
  });
  for (let i = 0; i < 100; i++) {
    const meta = await admin.fetchTopicMetadata({ topics: [topic] }).catch(() => null);
    if (meta?.topics[0]?.partitions.length === PARTITIONS && meta.topics[0].partitions.every((p) => p.leader >= 0)) return;
    await sleep(200);
  }
  throw new Error(`topic ${topic} has no leaders after 20 s`);
}

async function logContains(file: string, text: string): Promise<boolean> {
  return (await readFile(file, 'utf8').catch(() => '')).includes(text);
}

async function sourceTicks(src: pg.Pool): Promise<bigint> {
  const { rows } = await src.query<{ t: string }>(`SELECT (extract(epoch FROM clock_timestamp()) * 10000000)::bigint::text AS t`);
  return BigInt(rows[0]!.t);
}

async function highWater(ctl: pg.Pool): Promise<bigint> {
  const { rows } = await ctl.query<{ t: string | null }>(`SELECT min(high_water_ticks)::text AS t FROM hw_control.watermarks WHERE table_name = $1`, [TABLE]);
  return rows[0]?.t ? BigInt(rows[0].t) : -1n;
}

async function completedRuns(ctl: pg.Pool): Promise<number> {
  const { rows } = await ctl.query<{ n: number }>(`SELECT count(*)::int AS n FROM hw_control.runs WHERE status = 'completed'`);
  return rows[0]!.n;
}

async function storedOffsets(tgt: pg.Pool, groupId: string, topic: string): Promise<Map<number, bigint>> {
  const { rows } = await tgt.query<{ partition: number; next: string }>(
    `SELECT partition, next_offset::text AS next FROM ${quotePg(TARGET_SCHEMA)}.hw_offsets WHERE group_id = $1 AND topic = $2`, [groupId, topic]);
  return new Map(rows.map((r) => [r.partition, BigInt(r.next)]));
}

async function parked(tgt: pg.Pool): Promise<number> {
  const { rows } = await tgt.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${quotePg(TARGET_SCHEMA)}.hw_parked`);
  return rows[0]!.n;
}

/**
 * Offsets absent from the topic now: read from the start with a fresh group up to the last offset of every
 * partition (the last record sits in the active segment, which compaction never cleans).
 */
export async function missingOffsets(kafka: Kafka, topic: string, timeoutMs = 60_000): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic).finally(() => admin.disconnect());
  const last = new Map(ends.filter((e) => BigInt(e.high) > 0n).map((e) => [e.partition, BigInt(e.high) - 1n]));
  if (last.size === 0) return 0;
  const seen = new Map<number, number>();
  const consumer = kafka.consumer({ groupId: `hw-cv-compaction-${randomBytes(4).toString('hex')}` });
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const waiting = new Set(last.keys());
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`could not read ${topic} to its end within ${timeoutMs} ms`)), timeoutMs);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          seen.set(partition, (seen.get(partition) ?? 0) + 1);
          if (BigInt(message.offset) >= last.get(partition)!) waiting.delete(partition);
          if (waiting.size === 0) resolve();
        },
      }).catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
  return [...last].reduce((n, [partition, lastOffset]) => n + Number(lastOffset + 1n) - (seen.get(partition) ?? 0), 0);
}

function divergentKeys(report: InvariantReport): string[] {
  return [...report.i1.samples, ...report.i3.samples].map((d) => d.key).concat((report.i2?.samples ?? []).map((r) => r.key));
}

/** The operations of a history that touched one key, numbered as in history.txt. */
function opsTouching(ops: readonly Op[], key: string): string[] {
  const touches = (op: Op): boolean => {
    switch (op.kind) {
      case 'insert': case 'long-commit': return op.rows.some((r) => r.key === key);
      case 'update': return op.keys.includes(key);
      case 'same-microsecond': case 'delete-row': case 'delete-meta': case 'restore-meta': case 'undelete': case 'reparent': case 'set-bu': return op.key === key;
      case 'unmap-bu': case 'map-bu': return true;
      default: return false;
    }
  };
  return ops.flatMap((op, i) => (touches(op) ? [`${i}\t${describeOp(op)}`] : []));
}
