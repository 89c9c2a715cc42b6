import type { Admin, Message } from 'kafkajs';
import { quotePg } from '../../../src/sql/ident.js';
import type { CopyValue } from '../../../consumers/postgres/copy-binary.js';
import type { BenchContext } from '../context.js';
import { stageTimeoutMs } from '../context.js';
import type { WorkloadId } from '../model.js';
import { dbNowMs } from '../env/pgdb.js';
import type { SourceTable } from '../env/source.js';
import { copyIntoTarget } from './b1-copy.js';
import { observeCpu } from './cpu-split.js';
import { naiveApply, naiveProduce } from './b3-naive.js';
import { waitForRows } from './highwater.js';
import { javaProducerClasspath, runProduceCeiling } from './java-producer.js';
import { consumeAll, createTopic, produceAll } from './kafka-raw.js';
import { createTargetShapedTable } from './target-table.js';

/** One repetition of B1, B2 and B3 on a workload, in names of their own. */

export interface Load {
  readonly rows: number;
  readonly bytes: number;
}

/** B1: binary COPY of `tables` (each its own value list) in one transaction each; the times add up. */
export async function runB1(ctx: BenchContext, w: WorkloadId, rep: number, tables: readonly { name: string; values: readonly (readonly CopyValue[])[] }[], load: Load, withKey = true): Promise<void> {
  const schema = `b1_${slug(w)}_r${rep}`;
  let ms = 0;
  const windows: { startMs: number; endMs: number }[] = [];
  for (const t of tables) {
    const table = await createTargetShapedTable(ctx.target, ctx.env.repoDir, schema, t.name, withKey);
    const startMs = Date.now();
    ms += await copyIntoTarget(ctx.target, table, t.values);
    windows.push({ startMs, endMs: Date.now() });
  }
  ctx.collect.measure({ workload: w, system: 'B1', stage: 'copy', rep, rows: load.rows, bytes: load.bytes, ms, complete: true });
  // The CPU of the first table's COPY (most workloads have one table; W6's are alike).
  if (windows.length > 0) await observeCpu(ctx, w, 'B1', 'copy', rep, { ...windows[0]!, rows: Math.round(load.rows / tables.length) });
  await ctx.target.query(`DROP SCHEMA ${quotePg(schema)} CASCADE`);
}

/** B2: produce every payload (acks=all) to a fresh topic, then consume them all in a new group doing nothing. */
export async function runB2(ctx: BenchContext, w: WorkloadId, rep: number, messages: readonly Message[], load: Load): Promise<void> {
  const topic = `b2.${slug(w)}.r${rep}.${ctx.options.seed}`;
  const admin = ctx.kafka.admin();
  await admin.connect();
  const producer = ctx.kafka.producer({ allowAutoTopicCreation: false });
  try {
    await createTopic(admin, topic, 6);
    await producer.connect();
    const produceStartMs = Date.now();
    const produceMs = await produceAll(producer, topic, messages);
    await observeCpu(ctx, w, 'B2', 'produce', rep, { startMs: produceStartMs, endMs: Date.now(), rows: load.rows });
    ctx.collect.measure({ workload: w, system: 'B2', stage: 'produce', rep, rows: load.rows, bytes: load.bytes, ms: produceMs, complete: true });
    const consumed = await consumeAll(ctx.kafka, topic, `${topic}.group`, messages.length, stageTimeoutMs(load.rows));
    ctx.collect.measure({ workload: w, system: 'B2', stage: 'consume', rep, rows: consumed.seen, bytes: load.bytes, ms: consumed.ms, complete: consumed.seen >= messages.length, note: 'group joined to last batch' });
    ctx.collect.observe(w, 'B2', rep, 'consume: start -> group joined', consumed.joinMs / 1000, 's');
    await observeCpu(ctx, w, 'B2', 'consume', rep, { ...consumed.window, rows: consumed.seen });
    await admin.deleteTopics({ topics: [topic] });
    await produceWithJava(ctx, admin, w, rep, messages, load);
  } finally {
    await producer.disconnect();
    await admin.disconnect();
  }
}

/**
 * B2's second produce: as many records of the same mean size through Kafka's own Java producer, batched as a tuned
 * Java client batches (see java-producer.ts): what the broker takes, as against what plain kafkajs reaches. A
 * failure (no Maven, no java) is a note, not a failed run.
 */
async function produceWithJava(ctx: BenchContext, admin: Admin, w: WorkloadId, rep: number, messages: readonly Message[], load: Load): Promise<void> {
  const topic = `b2j.${slug(w)}.r${rep}.${ctx.options.seed}`;
  try {
    const classpath = await javaProducerClasspath();
    await createTopic(admin, topic, 6);
    const meanBytes = messages.reduce((sum, m) => sum + ((m.value as Buffer | null)?.length ?? 0), 0) / Math.max(1, messages.length);
    const result = await runProduceCeiling(classpath, ctx.env.brokers.join(','), topic, messages.length, meanBytes);
    ctx.collect.measure({ workload: w, system: 'B2', stage: 'produce-java', rep, rows: load.rows, bytes: load.bytes, ms: result.ms, complete: result.records >= messages.length, note: `Kafka's Java producer, ${Math.round(meanBytes)}-byte records` });
    if (result.window) await observeCpu(ctx, w, 'B2', 'produce-java', rep, { ...result.window, rows: load.rows });
    await admin.deleteTopics({ topics: [topic] });
  } catch (err) {
    ctx.collect.note(`B2 produce with Kafka's Java producer could not run: ${err instanceof Error ? err.message.split('\n').slice(0, 4).join(' / ') : String(err)}`);
  }
}

/** B3: the naive replicator, producer and consumer at once, until every row is in its target table. */
export async function runB3(ctx: BenchContext, w: WorkloadId, rep: number, source: SourceTable, baseUs: number, load: Load): Promise<void> {
  const name = `b3_${slug(w)}_r${rep}`;
  const topic = `b3.${slug(w)}.r${rep}.${ctx.options.seed}`;
  const table = await createTargetShapedTable(ctx.target, ctx.env.repoDir, name, source.blob);
  const admin = ctx.kafka.admin();
  await admin.connect();
  try {
    await createTopic(admin, topic, 6);
    const applier = await naiveApply(ctx.kafka, topic, `${topic}.group`, ctx.target, table);
    const started = await dbNowMs(ctx.target);
    const producing = naiveProduce(ctx.source, source, baseUs, ctx.kafka, topic);
    const probe = async () => {
      const { rows } = await ctx.target.query<{ n: string; last: string | null }>(`SELECT count(*) AS n, (extract(epoch FROM max(applied_at)) * 1000)::float8 AS last FROM ${table}`);
      return { rows: Number(rows[0]!.n), lastCommitMs: Number(rows[0]!.last ?? Number.NaN) };
    };
    const done = await waitForRows(probe, load.rows, stageTimeoutMs(load.rows, 50, load.bytes));
    await producing;
    await applier.stop();
    ctx.collect.measure({ workload: w, system: 'B3', stage: 'e2e', rep, rows: done.rows, bytes: load.bytes, ms: done.lastCommitMs - started, complete: done.complete });
    await admin.deleteTopics({ topics: [topic] });
  } finally {
    await admin.disconnect();
    await ctx.target.query(`DROP SCHEMA IF EXISTS ${quotePg(name)} CASCADE`);
  }
}

export function slug(w: WorkloadId): string {
  return w.toLowerCase().replace(/[^a-z0-9]/g, '');
}
