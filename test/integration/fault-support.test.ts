/**
 * The fault tools themselves: the TCP fault proxy in front of PostgreSQL, a broker advertised at a fault proxy, and a
 * private PostgreSQL cluster that can be stopped and killed. A fault test that passes because its fault never happened would prove nothing.
 */
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startFaultProxy } from '../support/fault-proxy.js';
import { startProxiedKafka } from '../support/proxied-kafka.js';
import { startPgCluster } from '../support/pg-cluster.js';
import { serverUrl } from '../support/pg.js';

async function client(url: string, options: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, ...options });
  c.on('error', () => undefined);
  await c.connect();
  onTestFinished(() => c.end().catch(() => undefined));
  return c;
}

function viaProxy(url: string, port: number): string {
  const u = new URL(url);
  u.host = `127.0.0.1:${port}`;
  return u.toString();
}

describe('fault proxy', () => {
  it('forwards, holds during a drop and delivers afterwards, resets, delays', async () => {
    const upstream = new URL(serverUrl());
    const proxy = await startFaultProxy({ upstreamPort: Number(upstream.port || 5432) });
    onTestFinished(() => proxy.close());
    const c = await client(viaProxy(serverUrl(), proxy.port));
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);

    // Drop: the query waits until the fault is over, then completes on the same connection.
    const dropped = proxy.fault({ kind: 'drop' }, 1500);
    const started = Date.now();
    expect((await c.query('SELECT 2 AS two')).rows[0].two).toBe(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    await dropped;

    // Delay: each round trip takes at least the latency twice (there and back).
    await proxy.fault({ kind: 'delay', latencyMs: 300 });
    const delayedAt = Date.now();
    await c.query('SELECT 3');
    expect(Date.now() - delayedAt).toBeGreaterThanOrEqual(550);
    proxy.heal();

    // Reset: the open connection breaks, and a new one is refused while the fault lasts.
    await proxy.fault({ kind: 'reset' });
    await expect(c.query('SELECT 4')).rejects.toThrow();
    await expect(client(viaProxy(serverUrl(), proxy.port), { connectionTimeoutMillis: 2000 })).rejects.toThrow();
    proxy.heal();
    const again = await client(viaProxy(serverUrl(), proxy.port));
    expect((await again.query('SELECT 5 AS five')).rows[0].five).toBe(5);
  });
});

describe('broker advertised at a fault proxy', () => {
  it("tells a client bootstrapped at the proxy the proxy's address, so a fault on the proxy cuts every connection of it while the direct listener answers", async () => {
    const kafka = await startProxiedKafka();
    onTestFinished(() => kafka.stop());
    expect(await kafka.advertisedToServices()).toEqual([kafka.proxied]);
    const topic = `hw-brokerproxy-${Date.now()}`;
    const admin = new Kafka({ clientId: 'hw-brokerproxy-admin', brokers: [kafka.direct], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    onTestFinished(() => admin.disconnect());
    await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
    // No retries: a send the fault breaks must fail here, not be retried past the heal.
    const producer = new Kafka({ clientId: 'hw-brokerproxy-producer', brokers: [kafka.proxied], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
    await producer.connect();
    onTestFinished(() => producer.disconnect());
    await producer.send({ topic, messages: [{ value: 'before' }] });

    // The producer's connection to the partition leader is not the bootstrap one: it breaks only if it goes through the proxy.
    await kafka.proxy.fault({ kind: 'reset' });
    await expect(producer.send({ topic, messages: [{ value: 'during' }] })).rejects.toThrow();
    expect((await admin.fetchTopicOffsets(topic))[0]!.high).toBe('1');

    kafka.proxy.heal();
    await producer.send({ topic, messages: [{ value: 'after' }] });
    expect((await admin.fetchTopicOffsets(topic))[0]!.high).toBe('2');
  });
});

describe('private PostgreSQL cluster', () => {
  it('starts on a free port, survives a stop/start and a SIGKILL with its data', async () => {
    const cluster = await startPgCluster();
    onTestFinished(() => cluster.destroy());
    expect(cluster.port).not.toBe(5432);
    const a = await client(cluster.url());
    await a.query('CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)');
    await a.end();

    await cluster.stop();
    await expect(client(cluster.url(), { connectionTimeoutMillis: 2000 })).rejects.toThrow();
    await cluster.start();
    const b = await client(cluster.url());
    expect((await b.query('SELECT count(*)::int AS n FROM kept')).rows[0].n).toBe(1);

    await cluster.kill();
    await expect(b.query('SELECT 1')).rejects.toThrow();
    await cluster.start();
    const c = await client(cluster.url());
    expect((await c.query('SELECT count(*)::int AS n FROM kept')).rows[0].n).toBe(1);
  });
});
