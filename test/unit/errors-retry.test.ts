import { describe, expect, it } from 'vitest';
import { classifyDbError, classifyKafkaError, coerceError, HighwaterError } from '../../src/errors.js';
import { getEventListeners } from 'node:events';
import { backoffDelay, sleep, withRetry } from '../../src/retry.js';
import { ERROR_CODES } from '../../src/errors.js';

describe('error classification', () => {
  it.each([
    ['40001', 'DB_TRANSIENT'], ['40P01', 'DB_TRANSIENT'], ['57P03', 'DB_UNAVAILABLE'], ['53300', 'DB_TRANSIENT'],
    ['08006', 'DB_UNAVAILABLE'], ['23505', 'DB_CONSTRAINT'], ['42P01', 'DB_QUERY'],
  ])('PostgreSQL SQLSTATE %s is %s', (code, expected) => {
    expect(classifyDbError(Object.assign(new Error('x'), { code }), 'ctx').code).toBe(expected);
  });

  it.each([[1205, 'DB_TRANSIENT'], [2627, 'DB_CONSTRAINT'], [2601, 'DB_CONSTRAINT'], [4060, 'DB_UNAVAILABLE']])('SQL Server error %s is %s', (number, expected) => {
    expect(classifyDbError(Object.assign(new Error('x'), { number }), 'ctx').code).toBe(expected);
  });

  it('treats refused and reset sockets as unavailable, and keeps the cause', () => {
    const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const err = classifyDbError(cause, 'source');
    expect(err.code).toBe('DB_UNAVAILABLE');
    expect(err.retriable).toBe(true);
    expect(err.cause).toBe(cause);
  });

  // Regression (fault matrix R5): after pg_terminate_backend, the next statement on the pooled client fails with
  // these messages and no SQLSTATE; taken for query errors, they stopped the consumer for good.
  it.each(['Client has encountered a connection error and is not queryable', 'Client was closed and is not queryable'])('treats pg\'s "%s" as unavailable (the connection is gone, a new one will do)', (message) => {
    expect(classifyDbError(new Error(message), 'apply').code).toBe('DB_UNAVAILABLE');
  });

  it('classifies kafkajs errors by their retriable flag', () => {
    expect(classifyKafkaError(Object.assign(new Error('x'), { retriable: true }), 'c').code).toBe('KAFKA_UNAVAILABLE');
    expect(classifyKafkaError(Object.assign(new Error('MESSAGE_TOO_LARGE'), { retriable: false, type: 'MESSAGE_TOO_LARGE' }), 'c').code).toBe('KAFKA_REJECTED');
  });

  it('coerces anything thrown into an Error', () => {
    expect(coerceError('boom').message).toBe('boom');
    expect(coerceError({ a: 1 }).message).toBe('{"a":1}');
  });
});

describe('retry', () => {
  const policy = { attempts: 4, initialDelayMs: 1, maxDelayMs: 4, jitter: 0 };

  it('backs off exponentially up to the cap', () => {
    expect([1, 2, 3, 4, 5].map((a) => backoffDelay({ ...policy, initialDelayMs: 100, maxDelayMs: 300 }, a))).toEqual([100, 200, 300, 300, 300]);
  });

  it('retries retriable errors until they succeed', async () => {
    let calls = 0;
    const result = await withRetry(async () => {
      calls++;
      if (calls < 3) throw new HighwaterError('DB_UNAVAILABLE', 'down');
      return 'ok';
    }, policy);
    expect([result, calls]).toEqual(['ok', 3]);
  });

  it('gives up at once on an error that will never succeed', async () => {
    let calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw new HighwaterError('DB_CONSTRAINT', 'dup');
    }, policy)).rejects.toThrow('dup');
    expect(calls).toBe(1);
  });

  it('stops after the last attempt and throws the last error', async () => {
    let calls = 0;
    await expect(withRetry(async () => {
      calls++;
      throw new HighwaterError('KAFKA_UNAVAILABLE', `down ${calls}`);
    }, policy)).rejects.toThrow('down 4');
  });
});

describe('abortable waits', () => {
  it('leaves no abort listener behind on a long-lived signal, however often it waits', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 20; i++) await sleep(1, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('ends early, without throwing, when the signal aborts', async () => {
    const controller = new AbortController();
    const waiting = sleep(60_000, controller.signal);
    controller.abort();
    await expect(waiting).resolves.toBeUndefined();
  });

  it('names the option a user can change in the too-large hint', () => {
    expect(ERROR_CODES.BLOB_TOO_LARGE.hint).toContain('poll.maxBlobBytes');
  });
});
