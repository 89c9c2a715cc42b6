/**
 * Regression (issue 9, fault matrix R3-stop): a broker stopped gracefully answers "not the coordinator" and then
 * goes away; kafkajs' rejoin then fails to find the group coordinator, wraps KafkaJSGroupCoordinatorNotFound in a
 * KafkaJSNonRetriableError and stops the consumer for good, so `highwater consume` exited on a fault that heals by
 * itself. ManualConsumer now takes such crashes for an outage and starts the consumer again after a pause; only
 * other failures (the handler's own) stop it for good. The end-to-end trigger is a race of the broker's shutdown;
 * the matrix's R3-stop scenario drives it, this test pins the classification.
 */
import { describe, expect, it } from 'vitest';
import { clusterUnreachable } from '../../src/kafka/consumer.js';

const named = (name: string, message: string, cause?: Error): Error => Object.assign(new Error(message, cause ? { cause } : {}), { name });

describe('a consumer crash', () => {
  it('is an outage when kafkajs could not reach the cluster, however deep the cause', () => {
    const notFound = named('KafkaJSGroupCoordinatorNotFound', 'Failed to find group coordinator');
    expect(clusterUnreachable(named('KafkaJSNonRetriableError', 'Failed to find group coordinator', notFound))).toBe(true);
    expect(clusterUnreachable(named('KafkaJSConnectionError', 'connect ECONNREFUSED 127.0.0.1:9092'))).toBe(true);
    expect(clusterUnreachable(named('KafkaJSNumberOfRetriesExceeded', 'retries', named('KafkaJSRequestTimeoutError', 'timeout')))).toBe(true);
  });

  it('is for good when the handler failed or kafkajs refused for another reason', () => {
    expect(clusterUnreachable(Object.assign(new Error('relation "tgt.x" does not exist'), { code: '42P01' }))).toBe(false);
    expect(clusterUnreachable(named('HighwaterError', 'the target refused the batch'))).toBe(false);
    expect(clusterUnreachable(named('KafkaJSNonRetriableError', 'Cannot subscribe to topic while consumer is running'))).toBe(false);
  });
});
