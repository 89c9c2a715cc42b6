import { Kafka, Partitioners, logLevel, type Admin, type Consumer, type KafkaConfig as KafkaJsConfig, type LogEntry, type Producer } from 'kafkajs';
import type { KafkaConfig } from '../config/schema.js';
import { classifyKafkaError } from '../errors.js';
import { partitionForKey as murmur2Partition } from './murmur2.js';
import type { Logger } from '../logger.js';

/**
 * The only module that builds kafkajs clients. kafkajs is in maintenance mode, so everything else talks to the
 * small types in this folder (publisher.ts, consumer.ts, topics.ts) and a replacement client stays a local change.
 */

export type { Admin, Consumer, Kafka, Producer };

export function createKafka(cfg: KafkaConfig, logger: Logger, clientSuffix = ''): Kafka {
  const config: KafkaJsConfig = {
    clientId: clientSuffix ? `${cfg.clientId}-${clientSuffix}` : cfg.clientId,
    brokers: [...cfg.brokers],
    ssl: cfg.ssl,
    connectionTimeout: cfg.connectionTimeoutMs,
    logLevel: logLevel.WARN,
    logCreator: () => (entry: LogEntry) => forwardLog(logger, entry),
    // kafkajs' own retries cover short broker blips; longer outages surface as KAFKA_UNAVAILABLE to our retry.
    retry: { retries: 8, initialRetryTime: 300, maxRetryTime: 30_000 },
  };
  if (cfg.sasl) config.sasl = { mechanism: cfg.sasl.mechanism, username: cfg.sasl.username, password: cfg.sasl.password } as KafkaJsConfig['sasl'];
  return new Kafka(config);
}

// kafkajs logs every retriable protocol response ("coordinator is loading", "group is rebalancing") at ERROR while
// it retries them itself; real failures reach us as thrown errors, which the caller logs. So these become warnings.
const RETRIED_RESPONSE = /^Response \w+\(key: \d+, version: \d+\)$/;
const NOISE = /Limiting retries for the idempotent producer/;

function forwardLog(logger: Logger, { level, log }: LogEntry): void {
  const { message, ...rest } = log;
  const fields = { component: 'kafkajs', ...rest };
  if (NOISE.test(message)) logger.debug(fields, message);
  else if (level === logLevel.ERROR && RETRIED_RESPONSE.test(message)) logger.warn(fields, message);
  else if (level === logLevel.ERROR) logger.error(fields, message);
  else if (level === logLevel.WARN) logger.warn(fields, message);
  else logger.debug(fields, message);
}

/** Idempotent producer: acks from all in-sync replicas, one request in flight per broker so retries keep order. */
export function createIdempotentProducer(kafka: Kafka): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
}

/**
 * The partition a key lands on with the Java-compatible murmur2 partitioner (src/kafka/murmur2.ts). Chunks of a
 * blob are sent to their row's partition explicitly, so they always precede the row's event in the same log.
 */
export function partitionForKey(_topic: string, key: string, partitionCount: number): number {
  return murmur2Partition(key, partitionCount);
}

export async function withKafkaErrors<T>(context: string, task: () => Promise<T>): Promise<T> {
  try {
    return await task();
  } catch (err) {
    throw classifyKafkaError(err, context);
  }
}

/**
 * Asks `bootstrap` once, without retrying, for its cluster id and how many brokers it lists (the local broker
 * runner's readiness probe).
 */
export async function probeCluster(bootstrap: string): Promise<{ clusterId: string; brokers: number }> {
  const kafka = new Kafka({
    clientId: 'highwater-devkafka-probe',
    brokers: [bootstrap],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1000,
    requestTimeout: 5000,
    retry: { retries: 0 },
  });
  const admin = kafka.admin();
  try {
    await admin.connect();
    const cluster = await admin.describeCluster();
    return { clusterId: cluster.clusterId, brokers: cluster.brokers.length };
  } finally {
    await admin.disconnect();
  }
}
