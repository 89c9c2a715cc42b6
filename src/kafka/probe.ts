import { Kafka, logLevel, type KafkaConfig as KafkaJsConfig } from 'kafkajs';
import type { KafkaConfig } from '../config/schema.js';
import { classifyKafkaError, coerceError, HighwaterError } from '../errors.js';
import { sleep } from '../retry.js';

/**
 * The first contact with Kafka, bounded by `kafka.startupTimeoutMs`. Before it, a command that could not reach the
 * brokers spent a minute in kafkajs' retries and printed a stack trace per attempt; now it gives up after a stated
 * time with one line naming Kafka, the brokers tried and the setting to change. Later outages, once the brokers
 * have answered, are still retried by the clients as before.
 */

const PAUSE_BETWEEN_ATTEMPTS_MS = 500;

export async function probeKafka(cfg: KafkaConfig, now: () => number = Date.now): Promise<void> {
  const deadline = now() + cfg.startupTimeoutMs;
  // Silent and without retries of its own: the loop below is the retry, and its last error is the one reported.
  const kafka = new Kafka({ ...clientConfig(cfg), logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  let last: Error = new Error('no attempt was made');
  for (;;) {
    const remaining = deadline - now();
    if (remaining <= 0) break;
    try {
      await attempt(kafka, remaining);
      return;
    } catch (err) {
      const classified = classifyKafkaError(err, 'Kafka');
      // A refused login does not get better by waiting.
      if (classified.code === 'KAFKA_AUTH') throw new HighwaterError('KAFKA_AUTH', authMessage(cfg, err), { cause: err });
      last = coerceError(err);
    }
    await sleep(Math.max(0, Math.min(PAUSE_BETWEEN_ATTEMPTS_MS, deadline - now())));
  }
  throw new HighwaterError('KAFKA_UNAVAILABLE', unreachableMessage(cfg, last), { cause: last });
}

export function unreachableMessage(cfg: KafkaConfig, last: Error): string {
  const seconds = Math.round(cfg.startupTimeoutMs / 100) / 10;
  return `Kafka: no broker answered within ${seconds} s (kafka.startupTimeoutMs); tried ${cfg.brokers.join(', ')} (kafka.brokers or HIGHWATER_KAFKA_BROKERS); last error: ${last.message}`;
}

export function authMessage(cfg: KafkaConfig, thrown: unknown): string {
  const err = coerceError(thrown) as Error & { type?: string };
  const brokers = cfg.brokers.join(', ');
  if (err.type === 'ILLEGAL_SASL_STATE') return `Kafka: ${brokers} does not take a SASL login on this listener, but kafka.sasl is set: remove kafka.sasl, or use the port of the SASL listener (${err.message})`;
  if (err.type === 'UNSUPPORTED_SASL_MECHANISM') return `Kafka: ${brokers} does not enable the SASL mechanism ${cfg.sasl?.mechanism ?? '(none)'} (kafka.sasl.mechanism) (${err.message})`;
  return `Kafka: ${brokers} refused the SASL login of ${cfg.sasl?.username ?? '(no user)'} (kafka.sasl): ${err.message}`;
}

async function attempt(kafka: Kafka, budgetMs: number): Promise<void> {
  const admin = kafka.admin({ retry: { retries: 0 } });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${budgetMs} ms`)), budgetMs);
  });
  try {
    await Promise.race([(async () => {
      await admin.connect();
      await admin.describeCluster();
    })(), timeout]);
  } finally {
    clearTimeout(timer);
    await admin.disconnect().catch(() => undefined);
  }
}

function clientConfig(cfg: KafkaConfig): KafkaJsConfig {
  const config: KafkaJsConfig = {
    clientId: `${cfg.clientId}-probe`,
    brokers: [...cfg.brokers],
    ssl: cfg.ssl,
    connectionTimeout: Math.min(cfg.connectionTimeoutMs, cfg.startupTimeoutMs),
  };
  if (cfg.sasl) config.sasl = { mechanism: cfg.sasl.mechanism, username: cfg.sasl.username, password: cfg.sasl.password } as KafkaJsConfig['sasl'];
  return config;
}
