import { setTimeout as sleep } from 'node:timers/promises';
import type { Admin, Kafka } from '../kafka/client.js';
import type { Ticks } from '../contract.js';
import { groupIdFor, retryTopicFor, tablesForTarget, topicFor } from '../config/load.js';
import type { Config, TableConfig, TargetConfig } from '../config/schema.js';
import { coerceError, HighwaterError } from '../errors.js';
import { withKafkaErrors } from '../kafka/client.js';
import type { Logger } from '../logger.js';
import { isValidIdentifier } from '../sql/ident.js';
import type { StoredOffset, TargetWriter } from '../apply/sink/writer.js';
import { assertGroupsIdle, commitGroupOffsets, lagOf, retryGroupIdFor, topicEnds, type PartitionLag } from '../apply/offsets.js';

/**
 * Rebuild: replay the table topics (compacted, so they hold every row's latest version and every delete still in
 * its retention) from the log start into a fresh schema, with a consumer group of its own, until it has caught up;
 * then, when asked, swap it in for the live schema.
 *
 * - The fresh schema is `<schema>_rebuild_<stamp>` and the group `<groupId>.rebuild.<stamp>` (stamp: UTC
 *   yyyymmddhhmmss). Its retry-topic positions start at the topics' current end: what waits there belongs to the
 *   live target, and the replay routes its own children afresh.
 * - Caught up: on every partition of the table and retry topics the stored next offset has reached the end read
 *   from the broker, and, where the control store has a high-watermark for a table and scope, consistent_as_of has
 *   reached it (every partition passed a marker that recent).
 * - Swap: only while the live group has no members. One transaction renames the live schema to
 *   `<schema>_old_<stamp>` and the rebuilt one to `<schema>`, and relabels the rebuild's offsets and watermarks
 *   with the configured group id — so `consume` continues from where the rebuild stopped with no configuration
 *   change. Kafka's committed offsets of the configured group are then set to match, for lag monitoring.
 */

/** PostgreSQL cuts identifiers at 63 bytes; names longer than that would silently collide. */
const MAX_SCHEMA_NAME = 63;

export interface RebuildNames {
  readonly stamp: string;
  readonly schema: string;
  readonly retiredSchema: string;
  readonly groupId: string;
}

/** UTC yyyymmddhhmmss. Pure. */
export function rebuildStamp(now: Date): string {
  return now.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

/**
 * The rebuild's schema, the name the live schema retires to, and the rebuild's group id. Pure. The group id follows
 * from the schema's name (its stamp, or the --into name), so a later `rebuild --into <that schema>` finds the
 * rebuild's stored offsets and continues it instead of replaying everything again into another schema.
 */
export function rebuildNames(live: { schema: string; groupId: string }, now: Date, into?: string): RebuildNames {
  const stamped = into === undefined ? null : new RegExp(`^${escapeRegExp(live.schema)}_rebuild_(\\d{14})$`).exec(into);
  const stamp = stamped ? stamped[1]! : rebuildStamp(now);
  const schema = into ?? `${live.schema}_rebuild_${stamp}`;
  const retiredSchema = `${live.schema}_old_${stamp}`;
  for (const [what, name] of [['--into schema', schema], ['retired schema', retiredSchema]] as const) {
    if (!isValidIdentifier(name) || name.length > MAX_SCHEMA_NAME) {
      throw new HighwaterError('USAGE', `the ${what} name ${JSON.stringify(name)} is not a plain identifier of at most ${MAX_SCHEMA_NAME} characters; name one with --into`);
    }
  }
  if (schema === live.schema) throw new HighwaterError('USAGE', `--into must name a schema other than the live one (${live.schema})`);
  const groupSuffix = into === undefined || stamped ? stamp : into;
  return { stamp, schema, retiredSchema, groupId: `${live.groupId}.rebuild.${groupSuffix}` };
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

export interface TableCompleteness {
  readonly table: string;
  readonly scope: string;
  readonly consistentAsOf: Ticks | null;
  /** The control store's high-watermark, or null when it has none (or cannot be read). */
  readonly highWater: Ticks | null;
  readonly complete: boolean;
}

export interface RebuildProgress {
  readonly partitions: readonly PartitionLag[];
  readonly lag: bigint;
  readonly tables: readonly TableCompleteness[];
  readonly caughtUp: boolean;
}

export interface HighWaterMark {
  readonly table: string;
  readonly scope: string;
  readonly highWater: Ticks | null;
}

/** Per table and scope of the control store: has the rebuild's consistent_as_of reached its high-watermark? Pure. */
export function assessTables(tables: readonly string[], consistent: readonly { table: string; scope: string; watermark: Ticks | null }[], highWaters: readonly HighWaterMark[] | null): TableCompleteness[] {
  const wanted = new Set(tables);
  const out: TableCompleteness[] = [];
  for (const hw of (highWaters ?? []).filter((h) => wanted.has(h.table) && h.highWater !== null)) {
    const c = consistent.find((x) => x.table === hw.table && x.scope === hw.scope)?.watermark ?? null;
    out.push({ table: hw.table, scope: hw.scope, consistentAsOf: c, highWater: hw.highWater, complete: c !== null && c >= hw.highWater! });
  }
  return out;
}

export function progressOf(partitions: readonly PartitionLag[], tables: readonly TableCompleteness[]): RebuildProgress {
  const lag = partitions.reduce((sum, p) => sum + p.lag, 0n);
  return { partitions, lag, tables, caughtUp: lag === 0n && tables.every((t) => t.complete) };
}

export interface RebuildDeps {
  readonly kafka: Kafka;
  readonly logger: Logger;
  /** A writer for a target; the caller closes it. */
  writer(target: TargetConfig): Promise<TargetWriter>;
  startConsumers(target: TargetConfig): Promise<{ readonly writer: TargetWriter; stop(): Promise<void> }>;
  ensureTableTopics(table: TableConfig): Promise<void>;
  /** The control store's high-watermarks, or null when they cannot be read. */
  highWaters(): Promise<readonly HighWaterMark[] | null>;
}

export interface RebuildOptions {
  readonly config: Config;
  readonly target: TargetConfig;
  readonly into?: string;
  readonly swap: boolean;
  /** Give up waiting after this long (0: wait until caught up or interrupted). */
  readonly timeoutMs: number;
  readonly pollMs?: number;
  readonly signal?: AbortSignal;
  readonly now?: Date;
  readonly onProgress?: (progress: RebuildProgress, names: RebuildNames) => void;
}

export interface RebuildResult {
  readonly outcome: 'caught-up' | 'timed-out' | 'interrupted';
  readonly names: RebuildNames;
  readonly liveSchema: string;
  readonly liveGroupId: string;
  readonly swapped: boolean;
  readonly progress: RebuildProgress;
  /** Offsets the configured group continues from after a swap. */
  readonly offsets: readonly StoredOffset[];
  /** Set when Kafka's committed offsets could not be aligned after the swap (monitoring only; the target is right). */
  readonly kafkaOffsetsWarning: string | null;
  /** True when --into named an earlier rebuild's schema, which was caught up from its stored offsets. */
  readonly continued: boolean;
}

export interface Topics {
  readonly tables: readonly string[];
  readonly table: readonly string[];
  readonly retry: readonly string[];
}

export async function rebuild(deps: RebuildDeps, options: RebuildOptions): Promise<RebuildResult> {
  const { config, target } = options;
  const liveGroupId = groupIdFor(target);
  const names = rebuildNames({ schema: target.schema, groupId: liveGroupId }, options.now ?? new Date(), options.into);
  if (options.swap && config.controlStore.database === target.database && config.controlStore.schema === target.schema) {
    throw new HighwaterError('USAGE', `--swap would move the control store too: it shares schema ${target.schema} of database ${target.database} with the target; give the target a schema of its own`);
  }
  const tables = tablesForTarget(config, target);
  const topics: Topics = { tables: tables.map((t) => t.name), table: tables.map((t) => topicFor(config, t)), retry: tables.map((t) => retryTopicFor(topicFor(config, t))) };
  const rebuildTarget: TargetConfig = { ...target, schema: names.schema, groupId: names.groupId };
  for (const t of tables) await deps.ensureTableTopics(t);
  const admin = deps.kafka.admin();
  await withKafkaErrors('connecting the admin client', () => admin.connect());
  try {
    const continued = (await prepareSchema(deps, admin, rebuildTarget, names, topics)) === 'continued';
    const { outcome, progress } = await replay(deps, admin, rebuildTarget, names, topics, options);
    const done = { names, liveSchema: target.schema, liveGroupId, progress, outcome, continued };
    if (outcome !== 'caught-up' || !options.swap) return { ...done, swapped: false, offsets: [], kafkaOffsetsWarning: null };
    return { ...done, swapped: true, ...(await swapIn(deps, admin, target, names, topics)) };
  } finally {
    await forgetGroups(admin, deps.logger, [names.groupId, retryGroupIdFor(names.groupId)]);
    await admin.disconnect();
  }
}

/**
 * Creates the fresh schema and starts its retry-topic positions at the topics' current end; or, when the schema is
 * an earlier rebuild of this target (it holds offsets of this rebuild's group), keeps it: its consumers resume from
 * those offsets, so only what was published since is applied.
 */
async function prepareSchema(deps: RebuildDeps, admin: Admin, rebuildTarget: TargetConfig, names: RebuildNames, topics: Topics): Promise<'fresh' | 'continued'> {
  const writer = await deps.writer(rebuildTarget);
  try {
    if (await writer.schemaExists()) {
      if (await isRebuildOf(writer, names.groupId, topics)) {
        deps.logger.info({ schema: names.schema, groupId: names.groupId }, 'continuing an earlier rebuild from its stored offsets');
        return 'continued';
      }
      throw new HighwaterError('USAGE', `schema ${names.schema} exists already and is not a rebuild of this target (no offsets of group ${names.groupId}); a rebuild goes into a fresh schema: drop it, or name another with --into`);
    }
    await writer.migrate();
    const ends = await topicEnds(admin, topics.retry);
    await writer.resetStoredOffsets(names.groupId, topics.retry, new Map([...ends].map(([topic, ps]) => [topic, new Map(ps.map((p) => [p.partition, p.high]))])));
    return 'fresh';
  } finally {
    await writer.close();
  }
}

export async function isRebuildOf(writer: TargetWriter, groupId: string, topics: Topics): Promise<boolean> {
  try {
    return (await writer.storedOffsets(groupId, [...topics.table, ...topics.retry])).length > 0;
  } catch (err) {
    // A schema without highwater's bookkeeping tables is someone else's: not a rebuild to continue. Any other
    // failure (the database restarting, a lost session) says nothing about the schema: it surfaces as itself,
    // retriable, rather than as "not a rebuild of this target", which would tell the operator to drop the schema.
    const error = coerceError(err);
    if (error instanceof HighwaterError && error.code === 'DB_QUERY') return false;
    throw error;
  }
}

async function replay(deps: RebuildDeps, admin: Admin, rebuildTarget: TargetConfig, names: RebuildNames, topics: Topics, options: RebuildOptions): Promise<{ outcome: RebuildResult['outcome']; progress: RebuildProgress }> {
  const running = await deps.startConsumers(rebuildTarget);
  // The replay starts here: what came before is start-up (client, schema, topics), what follows is the replay itself.
  deps.logger.info({ schema: names.schema, groupId: names.groupId }, 'rebuild consumers started; replaying the table topics');
  try {
    const measure = () => measureRebuild(admin, running.writer, names.groupId, topics, deps.highWaters);
    return await waitUntilCaughtUp(measure, options, (p) => options.onProgress?.(p, names));
  } finally {
    await running.stop();
  }
}

export async function measureRebuild(admin: Admin, writer: TargetWriter, groupId: string, topics: Topics, highWaters: () => Promise<readonly HighWaterMark[] | null>): Promise<RebuildProgress> {
  const ends = await topicEnds(admin, [...topics.table, ...topics.retry]);
  const stored = await writer.storedOffsets(groupId, [...ends.keys()]);
  const partitions = new Map(topics.table.map((t) => [t, ends.get(t)?.length ?? 0]));
  const consistent = await writer.consistentAsOfForPartitions(groupId, partitions);
  return progressOf(lagOf(stored, ends), assessTables(topics.tables, consistent, await highWaters()));
}

async function waitUntilCaughtUp(measure: () => Promise<RebuildProgress>, options: RebuildOptions, report: (p: RebuildProgress) => void): Promise<{ outcome: RebuildResult['outcome']; progress: RebuildProgress }> {
  const deadline = options.timeoutMs > 0 ? Date.now() + options.timeoutMs : Number.POSITIVE_INFINITY;
  for (;;) {
    const progress = await measure();
    report(progress);
    if (progress.caughtUp) return { outcome: 'caught-up', progress };
    if (options.signal?.aborted) return { outcome: 'interrupted', progress };
    if (Date.now() >= deadline) return { outcome: 'timed-out', progress };
    await sleep(options.pollMs ?? 1000, undefined, options.signal ? { signal: options.signal } : {}).catch(() => undefined);
  }
}

async function swapIn(deps: RebuildDeps, admin: Admin, target: TargetConfig, names: RebuildNames, topics: Topics): Promise<Pick<RebuildResult, 'offsets' | 'kafkaOffsetsWarning'>> {
  const liveGroupId = groupIdFor(target);
  await assertGroupsIdle(admin, [liveGroupId, retryGroupIdFor(liveGroupId)], `swap schema ${names.schema} in as ${target.schema}`, `; the rebuilt copy stays in schema ${names.schema}`);
  const writer = await deps.writer(target);
  let offsets: StoredOffset[];
  try {
    await writer.swapInRebuild({ rebuiltSchema: names.schema, retiredSchema: names.retiredSchema, fromGroupId: names.groupId, toGroupId: liveGroupId });
    offsets = await writer.storedOffsets(liveGroupId, [...topics.table, ...topics.retry]);
  } finally {
    await writer.close();
  }
  try {
    await commitGroupOffsets(admin, liveGroupId, byTopic(offsets.filter((o) => topics.table.includes(o.topic))));
    await commitGroupOffsets(admin, retryGroupIdFor(liveGroupId), byTopic(offsets.filter((o) => topics.retry.includes(o.topic))));
    return { offsets, kafkaOffsetsWarning: null };
  } catch (err) {
    const warning = `the swap is done, but Kafka's committed offsets of ${liveGroupId} could not be aligned (lag monitoring only; the consumer resumes from the target): ${coerceError(err).message}`;
    deps.logger.warn({ err: coerceError(err) }, warning);
    return { offsets, kafkaOffsetsWarning: warning };
  }
}

function byTopic(offsets: readonly StoredOffset[]): Map<string, Map<number, bigint>> {
  const out = new Map<string, Map<number, bigint>>();
  for (const o of offsets) out.set(o.topic, (out.get(o.topic) ?? new Map<number, bigint>()).set(o.partition, o.nextOffset));
  return out;
}

/** The rebuild's Kafka groups served only its run; their committed offsets mean nothing once it is over. */
async function forgetGroups(admin: Admin, logger: Logger, groupIds: readonly string[]): Promise<void> {
  try {
    await admin.deleteGroups([...groupIds]);
  } catch (err) {
    logger.debug({ err: coerceError(err), groupIds }, 'could not delete the rebuild consumer groups; Kafka expires them');
  }
}
