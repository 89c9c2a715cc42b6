import { HEADERS } from '../contract.js';
import type { InRecord, OutRecord } from '../events/records.js';

/** Records for the retry and dead-letter topics: the original key and value, with where they came from. Pure. */

function originHeaders(record: InRecord): Record<string, string> {
  return {
    ...record.headers,
    [HEADERS.originalTopic]: record.headers[HEADERS.originalTopic] ?? record.topic,
    [HEADERS.originalPartition]: record.headers[HEADERS.originalPartition] ?? String(record.partition),
    [HEADERS.originalOffset]: record.headers[HEADERS.originalOffset] ?? record.offset.toString(),
  };
}

export function retryRecord(record: InRecord, attempt: number, notBeforeMs: number): OutRecord {
  return {
    key: record.key?.toString() ?? '',
    value: record.value,
    headers: { ...originHeaders(record), [HEADERS.attempt]: String(attempt), [HEADERS.notBefore]: new Date(notBeforeMs).toISOString() },
  };
}

export function deadLetterRecord(record: InRecord, reason: string, kind: 'poison' | 'constraint' | 'missing-parent'): OutRecord {
  return {
    key: record.key?.toString('utf8') ?? '',
    value: record.value,
    headers: { ...originHeaders(record), [HEADERS.error]: reason.slice(0, 4000), [HEADERS.errorKind]: kind, [HEADERS.failedAt]: new Date().toISOString() },
  };
}
