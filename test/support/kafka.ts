/**
 * Kafka helpers for integration tests. Every test names its own topics and groups with `uniqueName`, so tests
 * never see each other's records even though the whole run shares one broker.
 */
import { randomBytes } from 'node:crypto';
import { Kafka, Partitioners, logLevel, type Admin, type IHeaders, type KafkaConfig } from 'kafkajs';
import { inject, onTestFinished } from 'vitest';
import type { BrokerStatus, KafkaControlInfo } from './global-setup.js';

export function brokers(): string[] {
  return inject('kafkaBrokers');
}

/** A kafkajs client for the test broker; kafkajs' own logging is limited to errors to keep test output readable. */
export function kafkaClient(clientId = 'highwater-test', overrides: Partial<KafkaConfig> = {}): Kafka {
  return new Kafka({ clientId, brokers: brokers(), logLevel: logLevel.ERROR, ...overrides });
}

/** The partitioner kafkajs v2 uses by default, named explicitly so kafkajs does not warn about the change. */
export const DEFAULT_PARTITIONER = Partitioners.DefaultPartitioner;

const MAX_NAME_PART = 80;

/**
 * A topic or group name unique to this test and this run: `hw-<test>-<suffix>-<random>`, using only the
 * characters Kafka allows (and no `.` or `_`, which Kafka treats as colliding in metric names).
 */
export function uniqueName(testName: string, suffix: string): string {
  return `hw-${kafkaSafe(testName)}-${kafkaSafe(suffix)}-${randomBytes(4).toString('hex')}`;
}

function kafkaSafe(text: string): string {
  const safe = text.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '');
  return (safe === '' ? 'x' : safe).slice(0, MAX_NAME_PART);
}

/** Runs `fn` with a connected admin client and always disconnects it. */
export async function withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafkaClient('highwater-test-admin').admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Creates a topic and waits until its partitions have leaders, so producing right away succeeds. */
export async function createTopic(name: string, partitions = 3, config: Readonly<Record<string, string>> = {}): Promise<void> {
  const configEntries = Object.entries(config).map(([configName, value]) => ({ name: configName, value }));
  await withAdmin(async (admin) => {
    const created = await admin.createTopics({ topics: [{ topic: name, numPartitions: partitions, replicationFactor: 1, configEntries }], waitForLeaders: true });
    if (!created) throw new Error(`topic ${name} already exists: uniqueName() should have prevented that`);
  });
}

export async function deleteTopics(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  await withAdmin((admin) => admin.deleteTopics({ topics: [...names] }));
}

/** Deletes the topics when the current test passes; a failed test's topics stay for inspection with kafka tools. */
export function deleteTopicsWhenPassed(names: readonly string[]): void {
  onTestFinished(async ({ task }) => {
    if (task.result?.state === 'pass') await deleteTopics(names);
  });
}

export interface ConsumedMessage {
  readonly topic: string;
  readonly partition: number;
  readonly offset: string;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: IHeaders;
}

export interface ConsumeOptions {
  readonly topic: string;
  readonly groupId: string;
  /** Resolves once this many messages arrived. */
  readonly count: number;
  readonly timeoutMs?: number;
  readonly fromBeginning?: boolean;
}

/**
 * Consumes with a fresh group member until `count` messages arrived, commits them, and leaves the group.
 * Rejects on timeout with how many did arrive, so a test failure says more than "timed out".
 */
export async function consumeMessages(options: ConsumeOptions): Promise<ConsumedMessage[]> {
  const consumer = kafkaClient('highwater-test-consumer').consumer({ groupId: options.groupId });
  const received: ConsumedMessage[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic: options.topic, fromBeginning: options.fromBeginning ?? true });
    await new Promise<void>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? 30_000;
      timer = setTimeout(() => reject(new Error(`received ${received.length} of ${options.count} messages from ${options.topic} within ${timeoutMs} ms`)), timeoutMs);
      consumer.on(consumer.events.CRASH, (event) => reject(event.payload.error));
      consumer
        .run({
          eachMessage: async ({ topic, partition, message }) => {
            received.push({ topic, partition, offset: message.offset, key: message.key, value: message.value, headers: message.headers ?? {} });
            if (received.length >= options.count) resolve();
          },
        })
        .catch(reject);
    });
    return received;
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
}

/**
 * Every record present in a topic now, in offset order per partition: read from the start with a fresh group until
 * the last offset of every partition has been seen (the last record is in the active segment, which compaction
 * never cleans). Offsets compaction removed are simply absent.
 */
export async function readTopic(topic: string, timeoutMs = 30_000): Promise<ConsumedMessage[]> {
  const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  const waiting = new Map(ends.filter((e) => BigInt(e.high) > BigInt(e.low)).map((e) => [e.partition, BigInt(e.high) - 1n]));
  if (waiting.size === 0) return [];
  const consumer = kafkaClient('highwater-test-reader').consumer({ groupId: uniqueName('read-topic', topic) });
  const received: ConsumedMessage[] = [];
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`read ${received.length} records of ${topic} within ${timeoutMs} ms; partitions still short: ${[...waiting.keys()].join(', ')}`)), timeoutMs);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          received.push({ topic, partition, offset: message.offset, key: message.key, value: message.value, headers: message.headers ?? {} });
          if (BigInt(message.offset) >= (waiting.get(partition) ?? -1n)) waiting.delete(partition);
          if (waiting.size === 0) resolve();
        },
      }).catch(reject);
    });
    return received.sort((a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)));
  } finally {
    clearTimeout(timer);
    await consumer.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Broker faults: only with the broker the global setup started (not with HIGHWATER_TEST_KAFKA_BROKERS).

function control(): KafkaControlInfo | null {
  return inject('kafkaControl');
}

/** False when the tests run against an external Kafka; fault tests use `it.skipIf(!canControlBroker())`. */
export function canControlBroker(): boolean {
  return control() !== null;
}

/** Stops the broker gracefully and resolves once the process has exited. */
export function stopBroker(): Promise<BrokerStatus> {
  return controlRequest('POST', '/broker/stop');
}

/** Starts the broker again on the same port and data, resolving once it answers; a no-op if it runs. */
export function startBroker(): Promise<BrokerStatus> {
  return controlRequest('POST', '/broker/start');
}

/** SIGKILL (resolves after the exit) for a crash; SIGSTOP/SIGCONT to freeze and thaw the broker. */
export function killBroker(signal: 'SIGKILL' | 'SIGTERM' | 'SIGSTOP' | 'SIGCONT' = 'SIGKILL'): Promise<BrokerStatus> {
  return controlRequest('POST', `/broker/kill?signal=${signal}`);
}

export function brokerStatus(): Promise<BrokerStatus> {
  return controlRequest('GET', '/broker');
}

async function controlRequest(method: 'GET' | 'POST', path: string): Promise<BrokerStatus> {
  const info = control();
  if (info === null) throw new Error('the broker is external (HIGHWATER_TEST_KAFKA_BROKERS), so tests cannot stop or start it');
  const response = await fetch(`${info.controlUrl}${path}`, { method });
  const body = (await response.json()) as BrokerStatus | { error: string };
  if (!response.ok || 'error' in body) {
    const reason = 'error' in body ? body.error : `HTTP ${response.status}`;
    throw new Error(`broker control ${method} ${path} failed: ${reason} (broker log: ${info.logFile})`);
  }
  return body;
}
