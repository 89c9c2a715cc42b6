import { describe, expect, it } from 'vitest';
import { classifyDbError, classifyKafkaError, classifyUnknownError, ERROR_CODES } from '../../src/errors.js';
import { authMessage, unreachableMessage } from '../../src/kafka/probe.js';
import { kafkaSchema } from '../../src/config/schema.js';

describe('each failure has its own hint', () => {
  it.each([
    ['28P01', 'DB_AUTH'], ['28000', 'DB_AUTH'], ['3D000', 'DB_MISSING'],
  ])('PostgreSQL SQLSTATE %s is %s', (code, expected) => {
    expect(classifyDbError(Object.assign(new Error('x'), { code }), 'ctx').code).toBe(expected);
  });

  it('SQL Server login failure 18456 is an authentication error', () => {
    expect(classifyDbError(Object.assign(new Error('Login failed'), { number: 18456 }), 'ctx').code).toBe('DB_AUTH');
  });

  it('SASL failures are KAFKA_AUTH, not "unavailable"', () => {
    expect(classifyKafkaError(Object.assign(new Error('x'), { name: 'KafkaJSSASLAuthenticationError' }), 'c').code).toBe('KAFKA_AUTH');
    expect(classifyKafkaError(Object.assign(new Error('x'), { type: 'ILLEGAL_SASL_STATE', retriable: false }), 'c').code).toBe('KAFKA_AUTH');
  });

  it('classifies driver errors that escaped their module', () => {
    expect(classifyUnknownError(Object.assign(new Error('x'), { name: 'KafkaJSConnectionError' })).code).toBe('KAFKA_UNAVAILABLE');
    expect(classifyUnknownError(Object.assign(new Error('x'), { code: '3D000' })).code).toBe('DB_MISSING');
    expect(classifyUnknownError(new TypeError('boom')).code).toBe('INTERNAL');
  });

  it('hints name options that exist', () => {
    expect(ERROR_CODES.BLOB_TOO_LARGE.hint).toContain('poll.maxBlobBytes');
    expect(ERROR_CODES.NOT_INITIALISED.hint).toContain('highwater init');
  });

  it('the unreachable-broker line names Kafka, the brokers, the time and the settings', () => {
    const cfg = kafkaSchema.parse({ brokers: ['a:1', 'b:2'], startupTimeoutMs: 2500 });
    expect(unreachableMessage(cfg, new Error('connect ECONNREFUSED'))).toBe('Kafka: no broker answered within 2.5 s (kafka.startupTimeoutMs); tried a:1, b:2 (kafka.brokers or HIGHWATER_KAFKA_BROKERS); last error: connect ECONNREFUSED');
    expect(authMessage({ ...cfg, sasl: { mechanism: 'plain', username: 'u', password: 'secret' } }, Object.assign(new Error('bad'), { type: 'SASL_AUTHENTICATION_FAILED' }))).not.toContain('secret');
  });
});
