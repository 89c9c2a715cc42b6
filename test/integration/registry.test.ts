import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BlobChange } from '../../src/contract.js';
import { defaultCacheDir } from '../../src/dev/kafka/kafka.js';
import { ensureRegistryRuntime, startRegistry, type RunningRegistry } from '../../src/dev/kafka/registry.js';
import { createCodec, RegistryCodec, SingleObjectCodec } from '../../src/events/codec.js';
import { changeRecord, decodeRecord, markerRecord } from '../../src/events/records.js';
import { createKafka } from '../../src/kafka/client.js';
import { Publisher } from '../../src/kafka/publisher.js';
import { createLogger } from '../../src/logger.js';
import { brokers, consumeMessages, createTopic, uniqueName } from '../support/kafka.js';

// A real Confluent-compatible registry (Apicurio Registry from Maven Central, or HIGHWATER_TEST_REGISTRY_URL),
// events encoded in the Confluent wire format, sent through the real broker, decoded by a fresh client.
let registry: RunningRegistry | undefined;
let registryUrl: string;

beforeAll(async () => {
  if (process.env.HIGHWATER_TEST_REGISTRY_URL) {
    registryUrl = process.env.HIGHWATER_TEST_REGISTRY_URL;
    return;
  }
  const runtime = await ensureRegistryRuntime(join(defaultCacheDir(), 'registry'));
  const dir = await mkdtemp(join(tmpdir(), 'hw-registry-'));
  registry = await startRegistry({ runtime, logFile: join(dir, 'registry.log') });
  registryUrl = registry.url;
}, 300_000);

afterAll(async () => {
  await registry?.stop();
});

function change(key: string, modifiedOn: bigint): BlobChange {
  const bytes = Buffer.from(`content of ${key}`);
  return {
    table: 'ReferralAttachment', tenant: '', key, name: `${key}.txt`, pathLocator: '/1/', parentPathLocator: null,
    isDirectory: false, size: bytes.length, attributes: {}, modifiedOn, observed: modifiedOn, businessUnit: null,
    content: { kind: 'inline', bytes }, contentSha256: Buffer.alloc(32, 3), runId: 'r', window: { start: 0n, end: modifiedOn },
  };
}

describe('schema registry encoding', () => {
  it('registers the schemas, and events survive the broker and a fresh decoder exactly', async () => {
    const producerCodec = new RegistryCodec(registryUrl);
    await producerCodec.registerAll();
    const topic = uniqueName('registry', 'events');
    await createTopic(topic, 1);
    const logger = createLogger({ level: 'error' });
    const publisher = new Publisher(createKafka({ brokers: brokers(), clientId: 'hw-registry-test', ssl: false, partitions: 1, replicationFactor: 1, maxMessageBytes: 1_048_576, connectionTimeoutMs: 10_000, startupTimeoutMs: 15_000 }, logger), 1_000_000);
    await publisher.connect();
    const sent = change('k-1', 17_637_000_000_000_001n);
    await publisher.send(topic, [await changeRecord(producerCodec, sent), await markerRecord(producerCodec, { table: 'ReferralAttachment', tenant: '', scope: '*', watermark: 42n, runId: 'r', partition: 0 })]);
    await publisher.disconnect();

    const messages = await consumeMessages({ topic, groupId: uniqueName('registry', 'group'), count: 2 });
    expect(messages[0]!.value![0]).toBe(0); // Confluent wire format magic byte
    const freshDecoder = createCodec({ kind: 'registry', registryUrl });
    const decoded = await Promise.all(messages.map((m) => decodeRecord(freshDecoder, { topic, partition: m.partition, offset: BigInt(m.offset), key: m.key, value: m.value, headers: Object.fromEntries(Object.entries(m.headers).map(([k, v]) => [k, String(v)])) })));
    expect(decoded[0]).toEqual({ type: 'change', change: { ...sent, attributes: { creationTime: null, lastWriteTime: null, lastAccessTime: null, isReadonly: null, isHidden: null, isSystem: null, isArchive: null } } });
    expect(decoded[1]).toMatchObject({ type: 'marker', marker: { watermark: 42n } });
  });

  it('lets a single-object consumer with a registry read registry-framed values while producers switch', async () => {
    const registryCodec = new RegistryCodec(registryUrl);
    const mixed = new SingleObjectCodec(new RegistryCodec(registryUrl));
    const c = change('k-2', 5n);
    const viaRegistry = await registryCodec.encode('BlobChange', (await import('../../src/events/mapping.js')).changeToAvro(c));
    expect((await mixed.decode(viaRegistry)).schema).toBe('BlobChange');
  });
});
