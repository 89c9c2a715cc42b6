import type { Admin } from '../kafka/client.js';
import { topicEnds, type PartitionEnds } from '../kafka/read-topic.js';
import { HighwaterError } from '../errors.js';
import { withKafkaErrors } from '../kafka/client.js';
import type { OffsetsTo, StoredOffset, TargetWriter } from './sink/writer.js';

/**
 * Moving a consumer group, as an operator does for a replay. The target holds the truth: its hw_offsets rows are
 * where the consumer resumes (see ApplyLoop), so they are rewritten first; Kafka's committed offsets, which only
 * serve lag monitoring, are then set the same way. Neither may move under a running consumer, so both steps start
 * by checking that the group has no active members. Retry topics keep their position: what waits there is still
 * due, and a replay of the table topics re-routes whatever still lacks a parent.
 */

export type ResetTo = { readonly kind: 'earliest' } | { readonly kind: 'time'; readonly at: Date };

/** Next offset per partition, per topic. */
export type OffsetsByTopic = ReadonlyMap<string, ReadonlyMap<number, bigint>>;

const ISO_WITH_ZONE = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;

/** `earliest`, or an ISO-8601 time with its zone (a bare date is midnight UTC). Pure. */
export function parseResetTo(text: string): ResetTo {
  if (text === 'earliest') return { kind: 'earliest' };
  const at = new Date(text);
  if (!ISO_WITH_ZONE.test(text) || Number.isNaN(at.getTime())) {
    throw new HighwaterError('USAGE', `--to must be "earliest" or an ISO-8601 time with its zone, such as 2026-01-31T12:00:00Z (got ${JSON.stringify(text)})`);
  }
  return { kind: 'time', at };
}

/** The group the retry consumers of a target use (wiring.ts names it so). */
export function retryGroupIdFor(groupId: string): string {
  return `${groupId}.retry`;
}

export { topicEnds, type PartitionEnds } from '../kafka/read-topic.js';

/** The next offset of every partition for a reset: the log start, or the first record at or after the time. */
export async function offsetsFor(admin: Admin, topics: readonly string[], to: ResetTo): Promise<Map<string, Map<number, bigint>>> {
  const out = new Map<string, Map<number, bigint>>();
  if (to.kind === 'earliest') {
    for (const [topic, ends] of await topicEnds(admin, topics)) out.set(topic, new Map(ends.map((e) => [e.partition, e.low])));
    return out;
  }
  for (const topic of topics) {
    // kafkajs answers with the partition's end where no record is that recent, so the consumer waits there.
    const found = await withKafkaErrors(`finding the offsets of ${topic} at ${to.at.toISOString()}`, () => admin.fetchTopicOffsetsByTimestamp(topic, to.at.getTime()));
    out.set(topic, new Map(found.map((o) => [o.partition, BigInt(o.offset)] as const).sort((a, b) => a[0] - b[0])));
  }
  return out;
}

export interface ActiveMember {
  readonly groupId: string;
  readonly memberId: string;
  readonly clientId: string;
  readonly clientHost: string;
}

export async function activeMembers(admin: Admin, groupIds: readonly string[]): Promise<ActiveMember[]> {
  const { groups } = await withKafkaErrors('describing consumer groups', () => admin.describeGroups([...groupIds]));
  return groups.flatMap((g) => g.members.map((m) => ({ groupId: g.groupId, memberId: m.memberId, clientId: m.clientId, clientHost: m.clientHost })));
}

/** A group still has members: its consumers would overwrite whatever is changed under them. */
export class ConsumersActiveError extends HighwaterError {
  readonly members: readonly ActiveMember[];

  constructor(action: string, members: readonly ActiveMember[], extra = '') {
    const list = members.map((m) => `${m.groupId}: ${m.clientId} on ${m.clientHost} (${m.memberId})`).join('; ');
    super('LEASE_HELD', `cannot ${action}: consumer group(s) ${[...new Set(members.map((m) => m.groupId))].join(', ')} still have ${members.length} active member(s): ${list}${extra}`);
    this.name = 'ConsumersActiveError';
    this.members = members;
  }

  override get hint(): string {
    return 'stop `highwater consume` (and `highwater run`) for this target everywhere, wait for the members to leave, then try again';
  }
}

export async function assertGroupsIdle(admin: Admin, groupIds: readonly string[], action: string, extra = ''): Promise<void> {
  const members = await activeMembers(admin, groupIds);
  if (members.length > 0) throw new ConsumersActiveError(action, members, extra);
}

/** Sets Kafka's committed offsets of an idle group (kafkajs joins the group briefly per topic to do it). */
export async function commitGroupOffsets(admin: Admin, groupId: string, offsets: OffsetsByTopic): Promise<void> {
  for (const [topic, partitions] of offsets) {
    if (partitions.size === 0) continue;
    const entries = [...partitions].map(([partition, offset]) => ({ partition, offset: offset.toString() }));
    await withKafkaErrors(`setting the offsets of group ${groupId} on ${topic}`, () => admin.setOffsets({ groupId, topic, partitions: entries }));
  }
}

export interface PartitionLag {
  readonly topic: string;
  readonly partition: number;
  /** Where the group stands: the stored next offset, or the log start when none is stored. */
  readonly next: bigint;
  readonly high: bigint;
  readonly lag: bigint;
}

/** Records between where the group stands and the end of every partition. Pure. */
export function lagOf(stored: readonly StoredOffset[], ends: ReadonlyMap<string, readonly PartitionEnds[]>): PartitionLag[] {
  const byId = new Map(stored.map((s) => [`${s.topic}\u0000${s.partition}`, s.nextOffset]));
  const out: PartitionLag[] = [];
  for (const [topic, partitions] of ends) {
    for (const e of partitions) {
      const stood = byId.get(`${topic}\u0000${e.partition}`) ?? e.low;
      const next = stood < e.low ? e.low : stood;
      out.push({ topic, partition: e.partition, next, high: e.high, lag: e.high > next ? e.high - next : 0n });
    }
  }
  return out;
}

export interface ResetRequest {
  readonly groupId: string;
  /** Table topics to move; retry topics are never among them. */
  readonly topics: readonly string[];
  readonly to: ResetTo;
}

/**
 * reset-offsets: refuses while the target's consumers run, rewrites the target's stored offsets (and drops its
 * watermarks of those topics), then sets the group's committed offsets in Kafka to the same positions.
 * Returns the positions the group now starts from.
 */
export async function resetOffsets(admin: Admin, writer: TargetWriter, request: ResetRequest): Promise<Map<string, Map<number, bigint>>> {
  await assertGroupsIdle(admin, [request.groupId, retryGroupIdFor(request.groupId)], `reset the offsets of ${request.groupId}`);
  const positions = await offsetsFor(admin, request.topics, request.to);
  const to: OffsetsTo = request.to.kind === 'earliest' ? 'earliest' : positions;
  await writer.resetStoredOffsets(request.groupId, request.topics, to);
  await commitGroupOffsets(admin, request.groupId, positions);
  return positions;
}
