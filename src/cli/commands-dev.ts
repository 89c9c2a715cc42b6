import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultCacheDir, ensureKafkaRuntime, kafkaRuntimeCached, startKafka, type KafkaBroker } from '../dev/kafka/kafka.js';
import { ensureRegistryRuntime, startRegistry, type RunningRegistry } from '../dev/kafka/registry.js';
import { HighwaterError } from '../errors.js';
import { portIsFree } from '../dev/kafka/ports.js';
import { EXIT } from './exit-codes.js';
import { installShutdown, untilAborted } from './shutdown.js';
import { loggerFor, report, type GlobalOptions } from './context.js';

/**
 * `highwater dev kafka`: the single-node KRaft broker the demo and the tests use (jars from Maven Central, cached),
 * for people without Docker who want `init`, `poll` and `consume` against a local Kafka. Runs in the foreground;
 * Ctrl-C (or SIGTERM) stops the broker, and the registry with --registry, and removes a throwaway data directory.
 * Needs no configuration file.
 */

export interface DevKafkaOptions extends GlobalOptions {
  port?: number;
  registry?: boolean;
  registryPort?: number;
  dataDir?: string;
}

export const DEV_KAFKA_HELP = `
Prints "bootstrap 127.0.0.1:<port>" (and "schema registry <url>" with --registry) on stdout once the broker answers,
then runs until Ctrl-C. The default port, 9092, is the default of kafka.brokers, so a configuration without a kafka
section uses it. The first run downloads Kafka's jars (and the registry's) with Maven into $HIGHWATER_CACHE_DIR
(default ~/.cache/highwater): a JDK 17 and \`mvn\` must be on PATH. Without --data-dir the topics live in a temporary
directory removed on exit.`;

export async function devKafkaCommand(options: DevKafkaOptions): Promise<number> {
  // A port in use would only show as a broker that dies at start-up, after the JVM's 10 s; say so at once.
  if (options.port && !(await portIsFree(options.port))) {
    throw new HighwaterError('USAGE', `port ${options.port} on 127.0.0.1 is in use (another Kafka?): stop that, or pick another with --port (0: any free port)`);
  }
  const logger = loggerFor(options);
  const stop = installShutdown(logger, 'stopping Kafka');
  const say = (line: string) => process.stderr.write(`${line}\n`);
  const cacheDir = defaultCacheDir();
  if (!(await kafkaRuntimeCached(cacheDir))) say(`downloading Kafka's jars from Maven Central into ${cacheDir} (first run only)…`);
  const runtime = await ensureKafkaRuntime(cacheDir, { onDownload: say });
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'highwater-dev-kafka-')));
  let broker: KafkaBroker | undefined;
  let registry: RunningRegistry | undefined;
  try {
    // Port 0 asks for any free port; the broker is then told the one picked, since it advertises its address.
    broker = await startKafka({ runtime, dataDir, logFile: join(dataDir, 'kafka.log'), ...(options.port ? { port: options.port } : {}) });
    if (options.registry) registry = await startDevRegistry(cacheDir, dataDir, broker.bootstrap, options.registryPort, say);
    report(options, { bootstrap: broker.bootstrap, schemaRegistry: registry?.url ?? null, dataDir, logFile: broker.logFile }, () => [
      `bootstrap ${broker!.bootstrap}`,
      ...(registry ? [`schema registry ${registry.url}`] : []),
    ].join('\n'));
    say(`Kafka ${broker.bootstrap} is up (log ${broker.logFile}); HIGHWATER_KAFKA_BROKERS=${broker.bootstrap}${registry ? ` HIGHWATER_SCHEMA_REGISTRY_URL=${registry.url}` : ''}; Ctrl-C stops it`);
    await untilStoppedOrDead(stop.signal, broker);
    if (!broker.running) throw new HighwaterError('KAFKA_UNAVAILABLE', `the broker exited by itself; see ${broker.logFile}`);
    return EXIT.OK;
  } finally {
    await registry?.stop();
    await broker?.stop();
    if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
  }
}

async function startDevRegistry(cacheDir: string, dataDir: string, bootstrap: string, port: number | undefined, say: (l: string) => void): Promise<RunningRegistry> {
  const runtime = await ensureRegistryRuntime(join(cacheDir, 'registry'), { onDownload: say });
  // Schemas are kept in the broker (kafkasql storage), so they live as long as its topics do.
  return startRegistry({ runtime, kafkaBootstrap: bootstrap, logFile: join(dataDir, 'registry.log'), ...(port !== undefined ? { port } : {}) });
}

/** Resolves on Ctrl-C/SIGTERM, or when the broker process is found gone (checked every second). */
async function untilStoppedOrDead(signal: AbortSignal, broker: KafkaBroker): Promise<void> {
  const dead = new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (!broker.running || signal.aborted) {
        clearInterval(timer);
        resolve();
      }
    }, 1000);
  });
  await Promise.race([untilAborted(signal), dead]);
}
