/**
 * The pure parts of reset-offsets, rebuild and the dead-letter commands, and the SQL they add to both target
 * dialects (parsed by sqlparser-rs; values must travel as parameters).
 */
import { init, parse } from '@guanmingchiu/sqlparser-ts';
import { beforeAll, describe, expect, it } from 'vitest';
import * as pgDialect from '../../consumers/postgres/dialect.js';
import * as msDialect from '../../consumers/sqlserver/dialect.js';
import { byFailedAt, deadLetterFrom, parseOffsetSelector, replayRecord, selectDeadLetters, type DeadLetter } from '../../src/ops/dlq.js';
import { ConsumersActiveError, lagOf, parseResetTo, retryGroupIdFor } from '../../src/apply/offsets.js';
import { assessTables, progressOf, rebuildNames, rebuildStamp } from '../../src/ops/rebuild.js';
import { HEADERS } from '../../src/contract.js';
import { HighwaterError } from '../../src/errors.js';
import type { InRecord } from '../../src/events/records.js';

const HOSTILE = `x'); DROP TABLE hw.hw_offsets; --`;

function usageError(fn: () => unknown): HighwaterError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HighwaterError);
    expect((err as HighwaterError).code).toBe('USAGE');
    return err as HighwaterError;
  }
  throw new Error('expected a usage error');
}

describe('parseResetTo', () => {
  it('reads earliest and ISO-8601 times with a zone', () => {
    expect(parseResetTo('earliest')).toEqual({ kind: 'earliest' });
    expect(parseResetTo('2026-01-31T12:00:00Z')).toEqual({ kind: 'time', at: new Date('2026-01-31T12:00:00Z') });
    expect(parseResetTo('2026-01-31T12:00:00.5+02:00')).toEqual({ kind: 'time', at: new Date('2026-01-31T10:00:00.5Z') });
    expect(parseResetTo('2026-01-31')).toEqual({ kind: 'time', at: new Date('2026-01-31T00:00:00Z') });
  });

  it('refuses anything else, a time without its zone included', () => {
    for (const bad of ['latest', 'yesterday', '2026-01-31T12:00:00', '2026-13-45T00:00:00Z', '', '1700000000000']) {
      expect(usageError(() => parseResetTo(bad)).message).toContain('--to');
    }
  });
});

describe('lagOf', () => {
  const ends = new Map([
    ['t', [{ partition: 0, low: 0n, high: 10n }, { partition: 1, low: 5n, high: 9n }, { partition: 2, low: 0n, high: 0n }]],
  ]);

  it('measures from the stored next offset, or the log start when none is stored', () => {
    expect(lagOf([{ topic: 't', partition: 0, nextOffset: 7n }], ends)).toEqual([
      { topic: 't', partition: 0, next: 7n, high: 10n, lag: 3n },
      { topic: 't', partition: 1, next: 5n, high: 9n, lag: 4n },
      { topic: 't', partition: 2, next: 0n, high: 0n, lag: 0n },
    ]);
  });

  it('never counts records the log no longer has, nor a position past the end', () => {
    const lags = lagOf([{ topic: 't', partition: 1, nextOffset: 2n }, { topic: 't', partition: 0, nextOffset: 12n }, { topic: 'other', partition: 0, nextOffset: 1n }], ends);
    expect(lags.map((l) => [l.partition, l.next, l.lag])).toEqual([[0, 12n, 0n], [1, 5n, 4n], [2, 0n, 0n]]);
  });
});

describe('rebuild names', () => {
  const now = new Date('2026-03-04T05:06:07.890Z');

  it('stamps in UTC yyyymmddhhmmss and derives the schemas and the group id from it', () => {
    expect(rebuildStamp(now)).toBe('20260304050607');
    expect(rebuildNames({ schema: 'replica', groupId: 'highwater.warehouse' }, now)).toEqual({
      stamp: '20260304050607', schema: 'replica_rebuild_20260304050607', retiredSchema: 'replica_old_20260304050607',
      groupId: 'highwater.warehouse.rebuild.20260304050607',
    });
    expect(rebuildNames({ schema: 'replica', groupId: 'g' }, now, 'copy').schema).toBe('copy');
  });

  it('names the same group for an earlier rebuild\'s schema, so `--into <it>` continues that rebuild (issue 10, item 10)', () => {
    const later = new Date('2026-03-05T00:00:00Z');
    const first = rebuildNames({ schema: 'replica', groupId: 'g' }, now);
    expect(rebuildNames({ schema: 'replica', groupId: 'g' }, later, first.schema)).toEqual(first);
    expect(rebuildNames({ schema: 'replica', groupId: 'g' }, later, 'copy').groupId).toBe('g.rebuild.copy');
  });

  it('refuses a schema that is not a plain identifier, too long for PostgreSQL, or the live one', () => {
    usageError(() => rebuildNames({ schema: 'replica', groupId: 'g' }, now, HOSTILE));
    usageError(() => rebuildNames({ schema: 'replica', groupId: 'g' }, now, 'a'.repeat(64)));
    usageError(() => rebuildNames({ schema: 'r'.repeat(50), groupId: 'g' }, now));
    usageError(() => rebuildNames({ schema: 'replica', groupId: 'g' }, now, 'replica'));
  });
});

describe('rebuild progress', () => {
  const lag = (n: bigint) => ({ topic: 't', partition: 0, next: 0n, high: n, lag: n });

  it('is complete for a table once consistent_as_of reaches the control store high-watermark', () => {
    const hw = [{ table: 'A', scope: '*', highWater: 100n }, { table: 'B', scope: '*', highWater: 50n }, { table: 'Other', scope: '*', highWater: 1n }, { table: 'A', scope: 'bu1', highWater: null }];
    const tables = assessTables(['A', 'B'], [{ table: 'A', scope: '*', watermark: 100n }, { table: 'B', scope: '*', watermark: null }], hw);
    expect(tables).toEqual([
      { table: 'A', scope: '*', consistentAsOf: 100n, highWater: 100n, complete: true },
      { table: 'B', scope: '*', consistentAsOf: null, highWater: 50n, complete: false },
    ]);
    expect(progressOf([lag(0n)], tables).caughtUp).toBe(false);
    expect(progressOf([lag(0n)], tables.slice(0, 1)).caughtUp).toBe(true);
  });

  it('waits for lag 0 alone when the control store cannot be read', () => {
    expect(assessTables(['A'], [], null)).toEqual([]);
    expect(progressOf([lag(3n), lag(0n)], [])).toMatchObject({ lag: 3n, caughtUp: false });
    expect(progressOf([lag(0n)], [])).toMatchObject({ lag: 0n, caughtUp: true });
  });
});

describe('ConsumersActiveError', () => {
  it('exits 1, names every active member and says what to do', () => {
    const err = new ConsumersActiveError('reset the offsets of g', [
      { groupId: 'g', memberId: 'm1', clientId: 'highwater', clientHost: '/10.0.0.1' },
      { groupId: retryGroupIdFor('g'), memberId: 'm2', clientId: 'highwater', clientHost: '/10.0.0.1' },
    ]);
    expect(err.exitCode).toBe(1);
    expect(err.message).toContain('g, g.retry still have 2 active member(s)');
    expect(err.message).toContain('highwater on /10.0.0.1 (m1)');
    expect(err.hint).toContain('stop `highwater consume`');
  });
});

function dlqRecord(partition: number, offset: bigint, headers: Record<string, string>, key = 'k1'): InRecord {
  return { topic: 't.dlq', partition, offset, key: Buffer.from(key), value: Buffer.from('value'), headers };
}

const FAILED = {
  [HEADERS.kind]: 'change', [HEADERS.table]: 'T', [HEADERS.runId]: 'r1',
  [HEADERS.error]: 'violates check constraint', [HEADERS.errorKind]: 'poison', [HEADERS.failedAt]: '2026-01-01T00:00:02.000Z',
  [HEADERS.originalTopic]: 't', [HEADERS.originalPartition]: '2', [HEADERS.originalOffset]: '17', [HEADERS.attempt]: '8', [HEADERS.notBefore]: '2026-01-01T00:00:00.000Z',
};

describe('dead letters', () => {
  it('reads what a dead-letter record says about itself', () => {
    const d = deadLetterFrom(dlqRecord(1, 4n, FAILED));
    expect(d).toMatchObject({
      partition: 1, offset: 4n, key: 'k1', errorKind: 'poison', reason: 'violates check constraint', originalTopic: 't',
      originalPartition: 2, originalOffset: 17n, failedAt: '2026-01-01T00:00:02.000Z', attempt: 8,
    });
    expect(deadLetterFrom(dlqRecord(0, 0n, {}))).toMatchObject({ errorKind: null, reason: null, originalTopic: null, originalPartition: null, originalOffset: null, attempt: null });
  });

  it('replays with the same key and value, without the failure headers, to the partition it came from', () => {
    const out = replayRecord(deadLetterFrom(dlqRecord(1, 4n, FAILED)), 't');
    expect(out).toEqual({
      key: 'k1', value: Buffer.from('value'), partition: 2,
      headers: { [HEADERS.kind]: 'change', [HEADERS.table]: 'T', [HEADERS.runId]: 'r1', [HEADERS.originalTopic]: 't', [HEADERS.originalPartition]: '2', [HEADERS.originalOffset]: '17' },
    });
    expect(replayRecord(deadLetterFrom(dlqRecord(1, 4n, { ...FAILED, [HEADERS.originalTopic]: 'elsewhere' })), 't').partition).toBeUndefined();
  });

  it('selects by offset or partition:offset, and refuses what is missing or ambiguous', () => {
    const all: DeadLetter[] = [dlqRecord(0, 3n, FAILED), dlqRecord(1, 3n, FAILED), dlqRecord(1, 4n, FAILED)].map(deadLetterFrom);
    expect(parseOffsetSelector('1:3')).toEqual({ partition: 1, offset: 3n });
    expect(parseOffsetSelector(' 4 ')).toEqual({ partition: null, offset: 4n });
    usageError(() => parseOffsetSelector('1:x'));
    usageError(() => parseOffsetSelector('-1'));
    expect(selectDeadLetters(all, [])).toEqual(all);
    expect(selectDeadLetters(all, [parseOffsetSelector('4'), parseOffsetSelector('0:3')])).toEqual([all[0], all[2]]);
    expect(usageError(() => selectDeadLetters(all, [parseOffsetSelector('3')])).message).toContain('0:3, 1:3');
    expect(usageError(() => selectDeadLetters(all, [parseOffsetSelector('2:3')])).message).toContain('no dead letter at 2:3');
  });

  it('orders by failure time, then partition and offset', () => {
    const at = (p: number, o: bigint, failedAt?: string) => deadLetterFrom(dlqRecord(p, o, failedAt ? { [HEADERS.failedAt]: failedAt } : {}));
    const sorted = [at(0, 9n, '2026-01-02T00:00:00Z'), at(1, 1n, '2026-01-01T00:00:00Z'), at(0, 2n), at(0, 1n, '2026-01-01T00:00:00Z')].sort(byFailedAt);
    expect(sorted.map((d) => `${d.partition}:${d.offset}`)).toEqual(['0:2', '0:1', '1:1', '0:9']);
  });
});

// ---------------------------------------------------------------------------------------------------- SQL

function* nodes(value: unknown): Generator<Record<string, unknown>> {
  if (Array.isArray(value)) for (const v of value) yield* nodes(v);
  else if (value !== null && typeof value === 'object') {
    yield value as Record<string, unknown>;
    for (const v of Object.values(value)) yield* nodes(v);
  }
}

function stringLiterals(ast: unknown): string[] {
  const out: string[] = [];
  for (const n of nodes(ast)) for (const kind of ['SingleQuotedString', 'NationalStringLiteral']) if (typeof n[kind] === 'string') out.push(n[kind] as string);
  return out;
}

beforeAll(async () => {
  await init();
});

describe('PostgreSQL statements', () => {
  const statements: [string, pgDialect.SqlQuery, number][] = [
    ['deleteStoredOffsets', pgDialect.deleteStoredOffsets('hw', HOSTILE, [HOSTILE]), 2],
    ['deleteWatermarks', pgDialect.deleteWatermarks('hw', HOSTILE, [HOSTILE]), 2],
    ['selectSchemaExists', pgDialect.selectSchemaExists('hw'), 1],
    ['renameSchema', pgDialect.renameSchema('hw', 'hw_old_20260101000000'), 0],
    ...pgDialect.deleteGroupBookkeeping('hw', HOSTILE).map((q, i) => [`deleteGroupBookkeeping ${i}`, q, 1] as [string, pgDialect.SqlQuery, number]),
    ...pgDialect.relabelGroup('hw', HOSTILE, 'g').map((q, i) => [`relabelGroup ${i}`, q, 2] as [string, pgDialect.SqlQuery, number]),
  ];

  it.each(statements)('%s parses, with its values as $n parameters', (_name, q, count) => {
    const ast = parse(q.text, 'postgresql');
    expect(ast).toHaveLength(1);
    expect(q.values).toHaveLength(count);
    for (let i = 1; i <= count; i++) expect(q.text).toContain(`$${i}`);
    expect(q.text).not.toContain(HOSTILE);
    expect(stringLiterals(ast)).toEqual([]);
  });

  it('quotes schema names and refuses what is not an identifier', () => {
    expect(pgDialect.renameSchema('hw', 'hw_old').text).toBe('ALTER SCHEMA "hw" RENAME TO "hw_old"');
    expect(() => pgDialect.renameSchema('hw', HOSTILE)).toThrow(TypeError);
    expect(() => pgDialect.selectSchemaExists(HOSTILE)).toThrow(TypeError);
  });
});

describe('SQL Server statements', () => {
  const statements: [string, msDialect.SqlQuery][] = [
    ['deleteStoredOffsets', msDialect.deleteStoredOffsets('hw', HOSTILE, [HOSTILE])],
    ['deleteWatermarks', msDialect.deleteWatermarks('hw', HOSTILE, [HOSTILE])],
    ['selectSchemaExists', msDialect.selectSchemaExists('hw')],
    ['swapSchemas', msDialect.swapSchemas('hw', 'hw_rebuild_20260101000000', 'hw_old_20260101000000')],
    ...msDialect.deleteGroupBookkeeping('hw', HOSTILE).map((q, i) => [`deleteGroupBookkeeping ${i}`, q] as [string, msDialect.SqlQuery]),
    ...msDialect.relabelGroup('hw', HOSTILE, 'g').map((q, i) => [`relabelGroup ${i}`, q] as [string, msDialect.SqlQuery]),
  ];

  it.each(statements)('%s parses as T-SQL, with exactly its values as @parameters', (_name, q) => {
    const ast = parse(q.text, 'mssql');
    expect(ast.length).toBeGreaterThan(0);
    const declared = new Set([...q.text.matchAll(/DECLARE (@\w+)/g)].map((m) => m[1]));
    const used = new Set<string>();
    for (const n of nodes(ast)) if (typeof n.value === 'string' && /^@\w+$/.test(n.value) && !declared.has(n.value)) used.add(n.value.slice(1));
    expect([...used].sort()).toEqual(Object.keys(q.values).sort());
    const literals = stringLiterals(ast);
    for (const { value } of Object.values(q.values)) if (typeof value === 'string') expect(literals).not.toContain(value);
    expect(q.text).not.toContain(HOSTILE);
  });

  it('moves every top-level object both ways, creates the retired schema, and drops the emptied rebuilt one', () => {
    const { text, values } = msDialect.swapSchemas('hw', 'hw_rebuild_1', 'hw_old_1');
    expect(values).toEqual({ live: { type: 'NVarChar', value: 'hw' }, rebuilt: { type: 'NVarChar', value: 'hw_rebuild_1' }, retired: { type: 'NVarChar', value: 'hw_old_1' } });
    expect(text).toContain("N'CREATE SCHEMA ' + QUOTENAME(@retired)");
    expect(text).toContain("N'ALTER SCHEMA ' + QUOTENAME(@retired) + N' TRANSFER ' + QUOTENAME(@live)");
    expect(text).toContain("N'ALTER SCHEMA ' + QUOTENAME(@live) + N' TRANSFER ' + QUOTENAME(@rebuilt)");
    expect(text).toContain("N'DROP SCHEMA ' + QUOTENAME(@rebuilt)");
    expect(text).toContain('o.[parent_object_id] = 0');
    expect(() => msDialect.swapSchemas('hw', HOSTILE, 'x')).toThrow(TypeError);
  });
});
