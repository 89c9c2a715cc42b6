/**
 * A single-node Kafka whose services' listener is advertised at a fault proxy's port, for network faults between
 * the services and the broker.
 *
 * A Kafka client uses its bootstrap address only for the first metadata request; every later connection (to the
 * partition leaders, to the group coordinator) goes to the address the broker *advertises*. A proxy in front of the
 * bootstrap port alone would therefore see one connection and none of the traffic. Here the broker has two client
 * listeners:
 *
 * - `PLAINTEXT` on 127.0.0.1:<direct>, advertised as itself: the harness (lag, poison record, clean-up) and the
 *   broker's own inter-broker traffic, so a fault never blinds the observer nor makes the broker talk to itself
 *   through the proxy;
 * - `PROXIED` on 127.0.0.1:<real>, advertised as 127.0.0.1:<proxy>: the proxy forwards <proxy> → <real>. A client
 *   bootstrapped at the proxy is answered with the listener its request came in on, so it is told the proxy's
 *   address and every one of its connections passes through the proxy.
 *
 * The CONTROLLER listener (KRaft combined mode, one voter) stays direct.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { ensureKafkaRuntime, startKafka, type KafkaBroker } from '../../src/dev/kafka/kafka.js';
import { freePorts } from '../../src/dev/kafka/ports.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';

export interface ProxiedKafka {
  readonly broker: KafkaBroker;
  readonly proxy: FaultProxy;
  /** Bootstrap for the harness: the direct listener. */
  readonly direct: string;
  /** Bootstrap for the services: the proxy, which is also what the broker advertises to them. */
  readonly proxied: string;
  /** Where the broker's data and log are. */
  readonly dir: string;
  /** The broker as a client bootstrapped at the proxy sees it in the metadata (must be the proxy's address). */
  advertisedToServices(): Promise<string[]>;
  /** Stops broker and proxy; removes the data and log unless `keep` (a failed scenario's evidence). */
  stop(options?: { keep?: boolean }): Promise<void>;
}

/** Listener settings that replace those of `brokerProperties` (src/dev/kafka/kafka.ts): two client listeners, one advertised at the proxy. */
export function proxiedListeners(at: { direct: number; real: number; proxy: number; controller: number }): Record<string, string> {
  return {
    listeners: `PLAINTEXT://127.0.0.1:${at.direct},PROXIED://127.0.0.1:${at.real},CONTROLLER://127.0.0.1:${at.controller}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${at.direct},PROXIED://127.0.0.1:${at.proxy}`,
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'inter.broker.listener.name': 'PLAINTEXT',
  };
}

export async function startProxiedKafka(options: { heapMb?: number } = {}): Promise<ProxiedKafka> {
  const runtime = await ensureKafkaRuntime();
  const dir = await mkdtemp(join(tmpdir(), 'hw-brokerproxy-kafka-'));
  const [direct, real, controller] = await freePorts(3);
  // The proxy first: its port must be known to be advertised, and it must forward before the broker's readiness probe.
  const proxy = await startFaultProxy({ upstreamPort: real!, name: 'broker' });
  try {
    const extra = proxiedListeners({ direct: direct!, real: real!, proxy: proxy.port, controller: controller! });
    const broker = await startKafka({
      runtime, dataDir: join(dir, 'data'), port: direct!, controllerPort: controller!, logFile: join(dir, 'broker.log'),
      heapMb: options.heapMb ?? 384, extraProperties: extra, readyTimeoutMs: 120_000,
    });
    return {
      broker, proxy, dir, direct: broker.bootstrap, proxied: proxy.address,
      advertisedToServices: () => advertisedVia(proxy.address),
      stop: async (stopOptions = {}) => {
        await broker.stop();
        await proxy.close();
        if (!stopOptions.keep) await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await proxy.close();
    throw err;
  }
}

/** The broker addresses a client bootstrapped at `bootstrap` is told to use. */
async function advertisedVia(bootstrap: string): Promise<string[]> {
  const admin = new Kafka({ clientId: 'hw-brokerproxy-probe', brokers: [bootstrap], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const { brokers } = await admin.describeCluster();
    return brokers.map((b) => `${b.host}:${b.port}`);
  } finally {
    await admin.disconnect();
  }
}
