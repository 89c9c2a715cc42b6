import { dlqTopicFor, groupIdFor, retryTopicFor, tablesForTarget, topicFor } from '../config/load.js';
import type { Config, TableConfig, TargetConfig } from '../config/schema.js';
import { listDeadLetters, parseOffsetSelector, replayRecord, selectDeadLetters, type DeadLetter } from '../ops/dlq.js';
import { parseResetTo, resetOffsets } from '../apply/offsets.js';
import { rebuild, type RebuildNames, type RebuildProgress, type RebuildResult } from '../ops/rebuild.js';
import { coerceError, HighwaterError } from '../errors.js';
import { withKafkaErrors } from '../kafka/client.js';
import { isoFromTicks } from '../time/ticks.js';
import { Runtime } from '../wiring.js';
import { loadContext, report, type GlobalOptions } from './context.js';
import { EXIT } from './exit-codes.js';
import { installShutdown } from './shutdown.js';

/** Bodies of the target-side operator commands: reset-offsets, rebuild, dlq list, dlq replay. Help texts are here too. */

export const RESET_OFFSETS_HELP = `
The target holds the truth: its hw_offsets rows for the group are rewritten first (earliest: deleted, so the
consumer starts at the log start; a time: the first offset at or after it on each partition, stored as the next
offset), and the group's watermarks of those topics are deleted (consistent_as_of is unknown until the replay passes
the markers again). Kafka's committed offsets of the group are then set to the same positions.
Refused (exit 1) while the group or its .retry group has active members: stop \`highwater consume\` first.
The .retry topics keep their position: children waiting for a parent stay due, and the replay re-routes any that
still lack one. Rows already in the target stay (a replay never makes a row older); to replay into an empty
target, empty its tables first, or use \`highwater rebuild\`.

Examples:
  highwater reset-offsets --target warehouse --to earliest
  highwater reset-offsets --target warehouse --to 2026-01-31T00:00:00Z --table ReferralAttachment --json`;

export const REBUILD_HELP = `
Replays the table topics from the log start into a fresh schema (default <schema>_rebuild_<yyyymmddhhmmss>, UTC)
with a new consumer group (<groupId>.rebuild.<stamp>), showing progress, until it has caught up: lag 0 on every
partition of the table and .retry topics (stored next offsets against the broker's end offsets) and, where the
control store has a high-watermark, consistent_as_of at or past it. The live schema is not touched meanwhile;
\`consume\` may keep running until the swap.

Without --swap both schemas stay; the rebuilt copy's schema and group id are printed. To put that copy in place
later, stop the consumers and run \`rebuild --into <that schema> --swap\`: --into naming an earlier rebuild's schema
continues it from its stored offsets (only what was published since is applied), then swaps. Drop a copy you do
not keep.
With --swap, once caught up and only while the target's consumers are stopped (refused with exit 1 otherwise,
leaving the rebuilt copy in place), one transaction renames <schema> to <schema>_old_<stamp> and the rebuilt
schema to <schema> (PostgreSQL; SQL Server moves the objects), so readers never see a half-built table. The
rebuild's offsets and watermarks are stored under the configured group id in the same transaction: start
\`highwater consume\` again and it continues from where the rebuild stopped; no configuration change is needed.
Drop <schema>_old_<stamp> when satisfied. The control store must not share the target's schema.
Dead letters and retries of the replay go to the shared .dlq/.retry topics (duplicates there are harmless).
A rebuild that is interrupted or times out (exit 1) leaves its partial schema; \`rebuild --into <it>\` continues it.

Examples:
  highwater rebuild --target warehouse                                   # prints the schema, e.g. replica_rebuild_20260131120000
  highwater rebuild --target warehouse --into replica_rebuild_20260131120000 --swap   # consumers stopped: catch up, swap
  highwater rebuild --target warehouse --swap --timeout 7200             # both in one go`;

export const DLQ_HELP = `
Dead letters are records a consumer could not apply (undecodable, schema mismatch, constraint error, parent that
never arrived), published to <topic>.dlq with the reason. The dead-letter topic itself is never changed.

Examples:
  highwater dlq list --table ReferralAttachment --limit 20
  highwater dlq replay --table ReferralAttachment --offset 2:17 3:4`;

function findTarget(config: Config, name: string): TargetConfig {
  const target = config.targets.find((t) => t.name === name);
  if (!target) throw new HighwaterError('USAGE', `unknown target ${JSON.stringify(name)}; configured: ${config.targets.map((t) => t.name).join(', ') || 'none'}`);
  return target;
}

function findTable(config: Config, name: string, within: readonly TableConfig[] = config.tables): TableConfig {
  const table = within.find((t) => t.name === name);
  if (!table) throw new HighwaterError('USAGE', `unknown table ${JSON.stringify(name)}; known here: ${within.map((t) => t.name).join(', ') || 'none'}`);
  return table;
}

async function withRuntime<T>(options: GlobalOptions, body: (rt: Runtime, config: Config) => Promise<T>): Promise<T> {
  const { config, logger } = await loadContext(options);
  const rt = new Runtime(config, logger);
  try {
    // Every command here talks to Kafka: an unreachable broker is one line after kafka.startupTimeoutMs.
    await rt.kafkaReady();
    return await body(rt, config);
  } finally {
    await rt.close();
  }
}

async function withAdmin<T>(rt: Runtime, body: (admin: ReturnType<Runtime['kafka']['admin']>) => Promise<T>): Promise<T> {
  const admin = rt.kafka.admin();
  await withKafkaErrors('connecting the admin client', () => admin.connect());
  try {
    return await body(admin);
  } finally {
    await admin.disconnect();
  }
}

// ------------------------------------------------------------------------------------------------ reset-offsets

export interface ResetOffsetsOptions extends GlobalOptions {
  target: string;
  to: string;
  table?: string[];
}

export async function resetOffsetsCommand(options: ResetOffsetsOptions): Promise<number> {
  const to = parseResetTo(options.to);
  return withRuntime(options, async (rt, config) => {
    const target = findTarget(config, options.target);
    const all = tablesForTarget(config, target);
    const tables = options.table && options.table.length > 0 ? options.table.map((n) => findTable(config, n, all)) : all;
    const topics = tables.map((t) => topicFor(config, t));
    const groupId = groupIdFor(target);
    const writer = await rt.writer(target);
    let positions: Map<string, Map<number, bigint>>;
    try {
      await writer.migrate();
      positions = await withAdmin(rt, (admin) => resetOffsets(admin, writer, { groupId, topics, to }));
    } finally {
      await writer.close();
    }
    const result = {
      target: target.name,
      groupId,
      to: to.kind === 'earliest' ? 'earliest' : to.at.toISOString(),
      topics: [...positions].map(([topic, ps]) => ({ topic, partitions: [...ps].map(([partition, nextOffset]) => ({ partition, nextOffset })) })),
      retryTopicsKept: topics.map(retryTopicFor),
    };
    report(options, result, () => [
      `target ${target.name} (group ${groupId}): offsets reset to ${result.to}`,
      ...result.topics.map((t) => `  ${t.topic}: ${t.partitions.map((p) => `p${p.partition}→${p.nextOffset}`).join(' ')}`),
      `retry topics keep their position: ${result.retryTopicsKept.join(', ')}`,
      `start \`highwater consume --target ${target.name}\` to replay`,
    ].join('\n'));
    return EXIT.OK;
  });
}

// ------------------------------------------------------------------------------------------------ rebuild

export interface RebuildCommandOptions extends GlobalOptions {
  target: string;
  into?: string;
  swap?: boolean;
  timeout?: string;
}

export async function rebuildCommand(options: RebuildCommandOptions): Promise<number> {
  const timeoutSeconds = Number(options.timeout ?? '0');
  if (!Number.isFinite(timeoutSeconds) || timeoutSeconds < 0) throw new HighwaterError('USAGE', `--timeout takes seconds, 0 for none (got ${JSON.stringify(options.timeout)})`);
  return withRuntime(options, async (rt, config) => {
    const target = findTarget(config, options.target);
    const stop = installShutdown(rt.logger);
    const result = await rebuild({
      kafka: rt.kafka,
      logger: rt.logger,
      writer: (t) => rt.writer(t),
      startConsumers: (t) => rt.startConsumers(t),
      ensureTableTopics: (t) => rt.ensureTableTopics(t),
      highWaters: async () => {
        try {
          return await rt.store().watermarks();
        } catch (err) {
          rt.logger.warn({ err: coerceError(err) }, 'cannot read high-watermarks from the control store; waiting for lag 0 only');
          return null;
        }
      },
    }, {
      config, target, swap: options.swap === true, timeoutMs: timeoutSeconds * 1000, signal: stop.signal,
      ...(options.into ? { into: options.into } : {}),
      ...(options.json ? {} : { onProgress: progressPrinter() }),
    });
    report(options, rebuildReport(result), () => rebuildSummary(result));
    return result.outcome === 'caught-up' ? EXIT.OK : EXIT.FAILURE;
  });
}

function progressLine(p: RebuildProgress, names: RebuildNames): string {
  const behind = p.partitions.filter((x) => x.lag > 0n).length;
  const tables = p.tables.map((t) => `${t.table}[${t.scope}] consistent as of ${t.consistentAsOf === null ? 'unknown' : isoFromTicks(t.consistentAsOf)} / high-water ${isoFromTicks(t.highWater!)}`);
  return [`rebuild into ${names.schema}: lag ${p.lag} records, ${p.partitions.length - behind}/${p.partitions.length} partitions caught up`, ...tables].join('; ');
}

/** A live line on a terminal; elsewhere a line every 10 s, so logs show progress without flooding. */
function progressPrinter(): (p: RebuildProgress, names: RebuildNames) => void {
  let last = 0;
  return (p, names) => {
    if (process.stderr.isTTY) {
      process.stderr.write(`\r${progressLine(p, names)}\u001b[K${p.caughtUp ? '\n' : ''}`);
    } else if (p.caughtUp || Date.now() - last >= 10_000) {
      last = Date.now();
      process.stderr.write(`${progressLine(p, names)}\n`);
    }
  };
}

function rebuildReport(r: RebuildResult): Record<string, unknown> {
  return {
    outcome: r.outcome,
    swapped: r.swapped,
    continued: r.continued,
    schema: r.swapped ? r.liveSchema : r.names.schema,
    rebuiltSchema: r.names.schema,
    retiredSchema: r.swapped ? r.names.retiredSchema : null,
    groupId: r.swapped ? r.liveGroupId : r.names.groupId,
    rebuildGroupId: r.names.groupId,
    lag: r.progress.lag,
    tables: r.progress.tables,
    offsets: r.offsets,
    kafkaOffsetsWarning: r.kafkaOffsetsWarning,
  };
}

function rebuildSummary(r: RebuildResult): string {
  if (r.outcome !== 'caught-up') {
    return `rebuild ${r.outcome} with ${r.progress.lag} records still to apply; the partial copy is in schema ${r.names.schema}: \`highwater rebuild --target … --into ${r.names.schema}\` continues it (or drop it)`;
  }
  if (!r.swapped) {
    return [
      `rebuilt copy ${r.continued ? 'continued and ' : ''}caught up in schema ${r.names.schema} (group ${r.names.groupId}); the live schema ${r.liveSchema} is unchanged`,
      `to put it in place: stop the consumers, then \`highwater rebuild --target … --into ${r.names.schema} --swap\` (applies only what arrived since, then swaps); or drop it`,
    ].join('\n');
  }
  return [
    `swapped: ${r.liveSchema} now holds the rebuilt copy; the previous one is ${r.names.retiredSchema} (drop it when satisfied)`,
    `group ${r.liveGroupId} continues from the rebuild's offsets: start \`highwater consume\` again`,
    ...(r.kafkaOffsetsWarning ? [`warning: ${r.kafkaOffsetsWarning}`] : []),
  ].join('\n');
}

// ------------------------------------------------------------------------------------------------ dlq

export interface DlqListOptions extends GlobalOptions {
  table: string;
  limit?: string;
}

function dlqView(d: DeadLetter): Record<string, unknown> {
  return {
    at: `${d.partition}:${d.offset}`, partition: d.partition, offset: d.offset, key: d.key, errorKind: d.errorKind, reason: d.reason,
    originalTopic: d.originalTopic, originalPartition: d.originalPartition, originalOffset: d.originalOffset, failedAt: d.failedAt, attempt: d.attempt,
  };
}

export async function dlqListCommand(options: DlqListOptions): Promise<number> {
  const limit = Number(options.limit ?? '100');
  if (!Number.isInteger(limit) || limit < 1) throw new HighwaterError('USAGE', `--limit takes a positive whole number (got ${JSON.stringify(options.limit)})`);
  return withRuntime(options, async (rt, config) => {
    const topic = dlqTopicFor(topicFor(config, findTable(config, options.table)));
    const all = await listDeadLetters(rt.kafka, topic, rt.logger);
    const shown = all.slice(0, limit);
    report(options, { topic, total: all.length, deadLetters: shown.map(dlqView) }, () => renderDeadLetters(topic, all.length, shown));
    return EXIT.OK;
  });
}

function renderDeadLetters(topic: string, total: number, shown: readonly DeadLetter[]): string {
  if (total === 0) return `${topic}: no dead letters`;
  const lines = [`${topic}: ${total} dead letter(s)${shown.length < total ? `, showing the first ${shown.length}` : ''}`];
  for (const d of shown) {
    const origin = d.originalTopic === null ? 'unknown origin' : `${d.originalTopic}[${d.originalPartition}]@${d.originalOffset}`;
    lines.push(`  ${d.partition}:${d.offset}  key ${d.key}  ${d.errorKind ?? 'unknown'}  failed ${d.failedAt ?? '?'}  from ${origin}`);
    lines.push(`      ${d.reason ?? '(no reason recorded)'}`);
  }
  return lines.join('\n');
}

export interface DlqReplayOptions extends GlobalOptions {
  table: string;
  offset?: string[];
}

export async function dlqReplayCommand(options: DlqReplayOptions): Promise<number> {
  const selectors = (options.offset ?? []).map(parseOffsetSelector);
  return withRuntime(options, async (rt, config) => {
    const mainTopic = topicFor(config, findTable(config, options.table));
    const dlqTopic = dlqTopicFor(mainTopic);
    const chosen = selectDeadLetters(await listDeadLetters(rt.kafka, dlqTopic, rt.logger), selectors);
    if (chosen.length > 0) await (await rt.publisher()).send(mainTopic, chosen.map((d) => replayRecord(d, mainTopic)));
    report(options, { from: dlqTopic, to: mainTopic, replayed: chosen.length, deadLetters: chosen.map((d) => `${d.partition}:${d.offset}`) },
      () => `replayed ${chosen.length} dead letter(s) from ${dlqTopic} to ${mainTopic}; the consumers try them again (the dead letters stay in ${dlqTopic})`);
    return EXIT.OK;
  });
}
