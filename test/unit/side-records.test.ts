import { describe, expect, it } from 'vitest';
import { deadLetterRecord, retryRecord } from '../../src/apply/side-records.js';
import { HEADERS } from '../../src/contract.js';
import type { InRecord } from '../../src/events/records.js';

function record(over: Partial<InRecord> = {}): InRecord {
  return {
    topic: 'highwater.src.T', partition: 2, offset: 2n ** 40n + 5n, key: Buffer.from('row-1'), value: Buffer.from([0xc3, 0x01, 0xff]),
    headers: { [HEADERS.kind]: 'change', [HEADERS.table]: 'T', [HEADERS.modifiedOnTicks]: '42' }, ...over,
  };
}

/** The bytes Kafka receives for an OutRecord's key (kafkajs encodes a string key as UTF-8). */
const keyBytes = (key: string): Buffer => Buffer.from(key);

describe('retryRecord', () => {
  it('keeps key, value and headers, and adds where the record came from, the attempt and the not-before time', () => {
    const notBefore = Date.UTC(2030, 0, 2, 3, 4, 5, 678);
    const out = retryRecord(record(), 3, notBefore);
    expect(out.key).toBe('row-1');
    expect(out.value).toEqual(Buffer.from([0xc3, 0x01, 0xff]));
    expect(out.partition).toBeUndefined();
    expect(out.headers).toEqual({
      [HEADERS.kind]: 'change', [HEADERS.table]: 'T', [HEADERS.modifiedOnTicks]: '42',
      [HEADERS.originalTopic]: 'highwater.src.T',
      [HEADERS.originalPartition]: '2',
      [HEADERS.originalOffset]: (2n ** 40n + 5n).toString(),
      [HEADERS.attempt]: '3',
      [HEADERS.notBefore]: '2030-01-02T03:04:05.678Z',
    });
    expect(Date.parse(out.headers[HEADERS.notBefore]!)).toBe(notBefore);
  });

  it('keeps the first origin when a record goes round the retry topic again, and replaces attempt and not-before', () => {
    const first = retryRecord(record(), 1, 1000);
    const fromRetryTopic = record({ topic: 'highwater.src.T.retry', partition: 0, offset: 7n, headers: first.headers });
    const second = retryRecord(fromRetryTopic, 2, 5000);
    expect(second.headers[HEADERS.originalTopic]).toBe('highwater.src.T');
    expect(second.headers[HEADERS.originalPartition]).toBe('2');
    expect(second.headers[HEADERS.originalOffset]).toBe((2n ** 40n + 5n).toString());
    expect(second.headers[HEADERS.attempt]).toBe('2');
    expect(second.headers[HEADERS.notBefore]).toBe(new Date(5000).toISOString());
  });

  it('sends a UTF-8 key through unchanged', () => {
    const key = Buffer.from('clé-€', 'utf8');
    expect(keyBytes(retryRecord(record({ key }), 1, 0).key)).toEqual(key);
  });
});

describe('deadLetterRecord', () => {
  it('keeps key, value and headers, and adds the reason, its kind, the time and the origin', () => {
    const before = Date.now();
    const out = deadLetterRecord(record(), 'value is neither Avro single-object nor Confluent framed', 'poison');
    expect(out.key).toBe('row-1');
    expect(out.value).toEqual(Buffer.from([0xc3, 0x01, 0xff]));
    expect(out.headers).toMatchObject({
      [HEADERS.kind]: 'change',
      [HEADERS.error]: 'value is neither Avro single-object nor Confluent framed',
      [HEADERS.errorKind]: 'poison',
      [HEADERS.originalTopic]: 'highwater.src.T',
      [HEADERS.originalPartition]: '2',
      [HEADERS.originalOffset]: (2n ** 40n + 5n).toString(),
    });
    const failedAt = Date.parse(out.headers[HEADERS.failedAt]!);
    expect(failedAt).toBeGreaterThanOrEqual(before - 1000);
    expect(failedAt).toBeLessThanOrEqual(Date.now() + 1000);
  });

  it('keeps the origin of a record that came through the retry topic, and its attempt', () => {
    const retried = record({ topic: 'highwater.src.T.retry', partition: 0, offset: 9n, headers: retryRecord(record(), 8, 0).headers });
    const out = deadLetterRecord(retried, 'parent /1/ did not arrive after 8 attempts', 'missing-parent');
    expect(out.headers[HEADERS.originalTopic]).toBe('highwater.src.T');
    expect(out.headers[HEADERS.originalOffset]).toBe((2n ** 40n + 5n).toString());
    expect(out.headers[HEADERS.attempt]).toBe('8');
    expect(out.headers[HEADERS.errorKind]).toBe('missing-parent');
  });

  it('keeps a null value (a tombstone) and a missing key, and cuts a long reason to 4000 characters', () => {
    const out = deadLetterRecord(record({ key: null, value: null, headers: {} }), 'x'.repeat(10_000), 'constraint');
    expect(out.key).toBe('');
    expect(out.value).toBeNull();
    expect(out.headers[HEADERS.error]).toHaveLength(4000);
    expect(out.headers[HEADERS.errorKind]).toBe('constraint');
  });

  it('sends a UTF-8 key through unchanged, so the dead letter can be published again as it was', () => {
    const key = Buffer.from('clé-€', 'utf8');
    expect(keyBytes(deadLetterRecord(record({ key }), 'bad', 'poison').key)).toEqual(key);
  });
});
