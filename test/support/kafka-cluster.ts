/**
 * A three-node KRaft cluster on this machine for fault tests: every node is broker and controller (a quorum of
 * three voters), topics default to replication factor 3 with min.insync.replicas 2, as a production cluster
 * should be set up (docs/operations.md). Nodes are the single-node brokers of src/dev/kafka/kafka.ts, given one
 * cluster id (their storage is formatted here, before the first start) and each other as voters.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { brokerProperties, ensureKafkaRuntime, startKafka, type KafkaBroker, type KafkaRuntime } from '../../src/dev/kafka/kafka.js';
import { freePorts } from '../../src/dev/kafka/ports.js';

export interface KafkaCluster {
  readonly brokers: readonly string[];
  readonly nodes: readonly KafkaBroker[];
  /** The node id (1-based) that leads `partition` of `topic` now. */
  leaderOf(topic: string, partition: number): Promise<number>;
  node(id: number): KafkaBroker;
  /** Stops the nodes; removes their data and logs unless `keep` (a failed scenario's evidence). */
  stop(options?: { keep?: boolean }): Promise<void>;
  /** Where the nodes' data directories and logs are. */
  readonly dir: string;
}

const NODES = 3;

/** Settings every node shares: the quorum, and the replication a lost node must not break. */
function clusterProperties(nodeId: number, voters: string): Record<string, string | number | boolean> {
  return {
    'node.id': nodeId,
    'controller.quorum.voters': voters,
    'default.replication.factor': 3,
    'min.insync.replicas': 2,
    'offsets.topic.replication.factor': 3,
    'transaction.state.log.replication.factor': 3,
    'transaction.state.log.min.isr': 2,
    'unclean.leader.election.enable': false,
  };
}

export async function startKafkaCluster(options: { heapMb?: number } = {}): Promise<KafkaCluster> {
  const runtime = await ensureKafkaRuntime();
  const dir = await mkdtemp(join(tmpdir(), 'hw-kafka-cluster-'));
  const ports = await freePorts(NODES * 2);
  const voters = Array.from({ length: NODES }, (_, i) => `${i + 1}@127.0.0.1:${ports[NODES + i]!}`).join(',');
  const clusterId = newClusterId();
  const specs = Array.from({ length: NODES }, (_, i) => {
    const dataDir = join(dir, `node-${i + 1}`);
    const port = ports[i]!;
    const controllerPort = ports[NODES + i]!;
    const extra = clusterProperties(i + 1, voters);
    return { dataDir, port, controllerPort, extra, logFile: join(dir, `node-${i + 1}.log`) };
  });
  for (const s of specs) await formatNode(runtime, s, clusterId);
  // All at once: a node becomes ready only when a quorum of controllers is up.
  const nodes = await Promise.all(specs.map((s) => startKafka({
    runtime, dataDir: s.dataDir, port: s.port, controllerPort: s.controllerPort, logFile: s.logFile,
    heapMb: options.heapMb ?? 384, extraProperties: s.extra, readyTimeoutMs: 120_000,
  })));
  const brokers = nodes.map((n) => n.bootstrap);
  return {
    brokers,
    nodes,
    node: (id) => nodes[id - 1]!,
    leaderOf: async (topic, partition) => {
      const admin = new Kafka({ clientId: 'hw-cluster-probe', brokers: [...brokers], logLevel: logLevel.NOTHING }).admin();
      await admin.connect();
      try {
        const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
        return topics[0]!.partitions.find((p) => p.partitionId === partition)!.leader;
      } finally {
        await admin.disconnect();
      }
    },
    dir,
    stop: async (options = {}) => {
      await Promise.all(nodes.map((n) => n.stop()));
      if (!options.keep) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Formats one node's storage with the shared cluster id, so startKafka finds it formatted and leaves it. */
async function formatNode(runtime: KafkaRuntime, spec: { dataDir: string; port: number; controllerPort: number; extra: Record<string, string | number | boolean> }, clusterId: string): Promise<void> {
  const logDir = join(spec.dataDir, 'kraft');
  await mkdir(logDir, { recursive: true });
  const properties = { ...brokerProperties({ port: spec.port, controllerPort: spec.controllerPort, logDir }), ...spec.extra };
  const file = join(spec.dataDir, 'server.properties');
  await writeFile(file, `${Object.entries(properties).map(([k, v]) => `${k}=${String(v)}`).join('\n')}\n`);
  await new Promise<void>((resolve, reject) => {
    execFile('java', ['-XX:TieredStopAtLevel=1', '-cp', join(runtime.libDir, '*'), `-Dlog4j.configuration=file:${runtime.log4jConfig}`,
      'kafka.tools.StorageTool', 'format', '--ignore-formatted', '-t', clusterId, '-c', file], { timeout: 120_000 },
    (error, stdout, stderr) => (error ? reject(new Error(`formatting ${spec.dataDir} failed: ${error.message}\n${stdout}${stderr}`)) : resolve()));
  });
}

function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}
