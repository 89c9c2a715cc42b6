import { HEADERS } from '../contract.js';
import { coerceError, HighwaterError } from '../errors.js';
import type { InRecord, OutRecord } from '../events/records.js';
import type { Kafka } from '../kafka/client.js';
import { readWholeTopic } from '../kafka/read-topic.js';
import type { Logger } from '../logger.js';

/**
 * Dead letters, for operators: read `<topic>.dlq` from its beginning (a throwaway consumer that never commits), and
 * put chosen dead letters back on the table topic — same key and value, the error headers removed — so the
 * consumers try them again. The dead-letter topic itself is never changed: it is the record of what failed.
 */

export interface DeadLetter {
  readonly partition: number;
  readonly offset: bigint;
  readonly key: string;
  readonly errorKind: string | null;
  readonly reason: string | null;
  readonly originalTopic: string | null;
  readonly originalPartition: number | null;
  readonly originalOffset: bigint | null;
  readonly failedAt: string | null;
  readonly attempt: number | null;
  /** The record as read, for replay. */
  readonly record: InRecord;
}

/** Headers that describe the failure (or the retry schedule); a replayed record starts without them. */
const FAILURE_HEADERS: ReadonlySet<string> = new Set([HEADERS.failedAt, HEADERS.attempt, HEADERS.notBefore]);

function isFailureHeader(name: string): boolean {
  return name.startsWith(HEADERS.error) || FAILURE_HEADERS.has(name);
}

const intOrNull = (v: string | undefined): number | null => (v !== undefined && /^\d+$/.test(v) ? Number(v) : null);
const bigOrNull = (v: string | undefined): bigint | null => (v !== undefined && /^\d+$/.test(v) ? BigInt(v) : null);

/** What a dead-letter record says about itself. Pure. */
export function deadLetterFrom(record: InRecord): DeadLetter {
  const h = record.headers;
  return {
    partition: record.partition,
    offset: record.offset,
    key: record.key?.toString('utf8') ?? '',
    errorKind: h[HEADERS.errorKind] ?? null,
    reason: h[HEADERS.error] ?? null,
    originalTopic: h[HEADERS.originalTopic] ?? null,
    originalPartition: intOrNull(h[HEADERS.originalPartition]),
    originalOffset: bigOrNull(h[HEADERS.originalOffset]),
    failedAt: h[HEADERS.failedAt] ?? null,
    attempt: intOrNull(h[HEADERS.attempt]),
    record,
  };
}

/**
 * The record that puts a dead letter back on the table topic: same key and value, headers without hw-error*,
 * hw-failed-at and the retry schedule. It goes to the partition it came from when it came from this topic (chunks
 * must stay in their row's partition); otherwise the key decides. Pure.
 */
export function replayRecord(dl: DeadLetter, mainTopic: string): OutRecord {
  const headers = Object.fromEntries(Object.entries(dl.record.headers).filter(([name]) => !isFailureHeader(name)));
  const samePlace = dl.originalTopic === mainTopic && dl.originalPartition !== null;
  return { key: dl.key, value: dl.record.value, headers, ...(samePlace ? { partition: dl.originalPartition! } : {}) };
}

export interface OffsetSelector {
  readonly partition: number | null;
  readonly offset: bigint;
}

/** `<offset>` or `<partition>:<offset>`, as `dlq list` prints them. Pure. */
export function parseOffsetSelector(text: string): OffsetSelector {
  const m = /^(?:(\d+):)?(\d+)$/.exec(text.trim());
  if (!m) throw new HighwaterError('USAGE', `--offset takes <offset> or <partition>:<offset> as \`dlq list\` prints them (got ${JSON.stringify(text)})`);
  return { partition: m[1] === undefined ? null : Number(m[1]), offset: BigInt(m[2]!) };
}

/** The dead letters the selectors name; a selector that matches none, or a bare offset that matches several, is an error. Pure. */
export function selectDeadLetters(all: readonly DeadLetter[], selectors: readonly OffsetSelector[]): DeadLetter[] {
  if (selectors.length === 0) return [...all];
  const chosen = new Set<DeadLetter>();
  for (const s of selectors) {
    const matches = all.filter((d) => d.offset === s.offset && (s.partition === null || d.partition === s.partition));
    const label = s.partition === null ? String(s.offset) : `${s.partition}:${s.offset}`;
    if (matches.length === 0) throw new HighwaterError('USAGE', `no dead letter at ${label}; see \`highwater dlq list\``);
    if (matches.length > 1) throw new HighwaterError('USAGE', `offset ${label} is in several partitions (${matches.map((d) => `${d.partition}:${d.offset}`).join(', ')}); name one as <partition>:<offset>`);
    chosen.add(matches[0]!);
  }
  return all.filter((d) => chosen.has(d));
}

/** Oldest failure first (ISO times sort as text), then by partition and offset. Pure. */
export function byFailedAt(a: DeadLetter, b: DeadLetter): number {
  const [fa, fb] = [a.failedAt ?? '', b.failedAt ?? ''];
  const at = fa < fb ? -1 : fa > fb ? 1 : 0;
  return at !== 0 ? at : a.partition - b.partition || (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0);
}

/** The dead letters of a table topic's `<topic>.dlq`, oldest failure first. */
export async function listDeadLetters(kafka: Kafka, dlqTopic: string, logger: Logger): Promise<DeadLetter[]> {
  return (await readWholeTopic(kafka, dlqTopic, logger)).map(deadLetterFrom).sort(byFailedAt);
}
