/**
 * A throwaway single-node Kafka (KRaft, broker and controller in one JVM) for the demo and the integration tests.
 *
 * There is no Docker on the machines this must run on, so the broker comes from Maven Central: a generated pom
 * names the Kafka server artifact and Maven copies its runtime jars into a cache directory once. The broker is a
 * plain `java` child process in its own process group, so it can be signalled as a whole and never receives the
 * terminal's Ctrl-C before highwater has had a chance to shut down in order.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { probeCluster } from '../../kafka/client.js';
import { HighwaterError, coerceError } from '../../errors.js';
import { sleep } from '../../retry.js';
import { freePorts } from './ports.js';
import { downloadReporter } from './maven-progress.js';

export const KAFKA_VERSION = '3.9.1';

const SCALA_VERSION = '2.13';
// Kafka 3.9 logs through slf4j; without a binding it would print nothing at all, so startup failures would be mute.
const SLF4J_BINDING = { groupId: 'org.slf4j', artifactId: 'slf4j-reload4j', version: '1.7.36' };
// Pinned so that a fetch does not depend on whichever plugin version Maven's metadata names today.
const DEPENDENCY_PLUGIN = 'org.apache.maven.plugins:maven-dependency-plugin:3.8.1';
const MAVEN_TIMEOUT_MS = 10 * 60_000;
const COMPLETE_MARKER = '.complete';
const MIN_JAVA_MAJOR = 11;

const DEFAULT_HEAP_MB = 512;
const DEFAULT_READY_TIMEOUT_MS = 60_000;
const STOP_GRACE_MS = 20_000;
const READY_POLL_INTERVAL_MS = 250;
const LOG_TAIL_LINES = 40;

/** A failure of the local Kafka runtime (no JDK, Maven failed, the broker did not come up); the message says what to do. */
export class DevKafkaError extends HighwaterError {
  private readonly remedy: string;

  constructor(message: string, remedy: string, options?: { cause?: unknown }) {
    super('KAFKA_UNAVAILABLE', message, options);
    this.name = 'DevKafkaError';
    this.remedy = remedy;
  }

  // The generic hint ("check that the brokers are reachable") would send the user looking in the wrong place.
  override get hint(): string {
    return this.remedy;
  }
}

/** Where the Kafka jars are cached: `$HIGHWATER_CACHE_DIR`, else `~/.cache/highwater`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const configured = env.HIGHWATER_CACHE_DIR;
  return configured !== undefined && configured !== '' ? configured : join(homedir(), '.cache', 'highwater');
}

/** The files of one cached Kafka version. */
export interface KafkaRuntime {
  readonly version: string;
  readonly dir: string;
  readonly libDir: string;
  readonly log4jConfig: string;
}

/** The layout of the cached runtime under `cacheDir`, whether or not it has been fetched. */
export function kafkaRuntimeAt(cacheDir: string): KafkaRuntime {
  const dir = join(cacheDir, `kafka-${KAFKA_VERSION}`);
  return { version: KAFKA_VERSION, dir, libDir: join(dir, 'lib'), log4jConfig: join(dir, 'log4j.properties') };
}

/**
 * Makes sure the Kafka jars are in the cache, fetching them with Maven the first time. Instant when cached.
 * The `.complete` marker is written last, so an interrupted fetch is simply done again.
 */
export async function ensureKafkaRuntime(cacheDir: string = defaultCacheDir(), options: FetchOptions = {}): Promise<KafkaRuntime> {
  await assertJavaAvailable();
  const runtime = kafkaRuntimeAt(cacheDir);
  if (!(await exists(join(runtime.dir, COMPLETE_MARKER)))) await fetchRuntime(runtime, options);
  return runtime;
}

export interface FetchOptions {
  /** Receives one line per file Maven downloads (first run only); without it Maven runs quietly. */
  readonly onDownload?: (line: string) => void;
}

/** Whether the Kafka jars are already in the cache (then nothing is downloaded). */
export async function kafkaRuntimeCached(cacheDir: string = defaultCacheDir()): Promise<boolean> {
  return exists(join(kafkaRuntimeAt(cacheDir).dir, COMPLETE_MARKER));
}

async function assertJavaAvailable(): Promise<void> {
  const remedy = `install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless) and put \`java\` on PATH`;
  let versionText: string;
  try {
    versionText = await runForOutput('java', ['-version']);
  } catch (err) {
    throw new DevKafkaError(`cannot run \`java\` (${coerceError(err).message}): the local Kafka needs a JDK 17 on PATH`, remedy, { cause: err });
  }
  const major = javaMajorVersion(versionText);
  if (major !== undefined && major < MIN_JAVA_MAJOR) {
    throw new DevKafkaError(`Kafka ${KAFKA_VERSION} needs Java ${MIN_JAVA_MAJOR} or later, but \`java\` is version ${major}`, remedy);
  }
}

/** `version "17.0.15"` → 17; the old scheme `version "1.8.0_392"` → 8. */
export function javaMajorVersion(versionText: string): number | undefined {
  const match = /version "(\d+)(?:\.(\d+))?/.exec(versionText);
  if (match === null) return undefined;
  const first = Number(match[1]);
  return first === 1 && match[2] !== undefined ? Number(match[2]) : first;
}

async function fetchRuntime(runtime: KafkaRuntime, options: FetchOptions): Promise<void> {
  await mkdir(runtime.dir, { recursive: true });
  await writeFile(join(runtime.dir, 'pom.xml'), runtimePom());
  await writeFile(runtime.log4jConfig, LOG4J_PROPERTIES);
  // Maven writes into a private directory that is renamed into place, so a broker never sees half a classpath.
  const partialDir = `${runtime.libDir}.partial-${process.pid}`;
  await rm(partialDir, { recursive: true, force: true });
  try {
    await runMaven(runtime.dir, partialDir, options.onDownload);
    await assertServerJarPresent(partialDir);
    // A concurrent fetch (the demo and a test run at once) may have finished first; its jars are the same.
    if (await exists(join(runtime.dir, COMPLETE_MARKER))) return;
    await rm(runtime.libDir, { recursive: true, force: true });
    await rename(partialDir, runtime.libDir);
  } finally {
    await rm(partialDir, { recursive: true, force: true });
  }
  await writeFile(join(runtime.dir, COMPLETE_MARKER), `kafka ${KAFKA_VERSION} fetched ${new Date().toISOString()}\n`);
}

function runtimePom(): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by highwater: only used to download the Kafka ${KAFKA_VERSION} server jars into ./lib. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>highwater</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>${KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_${SCALA_VERSION}</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>${SLF4J_BINDING.groupId}</groupId><artifactId>${SLF4J_BINDING.artifactId}</artifactId><version>${SLF4J_BINDING.version}</version></dependency>
  </dependencies>
</project>
`;
}

// WARN keeps the log small; the server classes at INFO record when the broker started and stopped, which is what
// one looks for first when a test run went wrong.
const LOG4J_PROPERTIES = `log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
`;

async function runMaven(projectDir: string, outputDir: string, onDownload?: (line: string) => void): Promise<void> {
  // -q hides the transfer lines too; when someone watches, Maven speaks and only its downloads are passed on.
  const args = [...(onDownload ? [] : ['-q']), '-B', '-f', join(projectDir, 'pom.xml'), `${DEPENDENCY_PLUGIN}:copy-dependencies`, `-DoutputDirectory=${outputDir}`, '-DincludeScope=runtime'];
  const progress = onDownload ? downloadReporter(onDownload) : undefined;
  const result = await runCollecting('mvn', args, projectDir, MAVEN_TIMEOUT_MS, progress);
  if (result.spawnError !== undefined) {
    throw new DevKafkaError(`cannot run Maven (\`mvn\`, ${result.spawnError.message}): it is needed once to fetch Kafka ${KAFKA_VERSION}`, 'install Maven 3.8 or later (Debian: apt-get install maven) and put `mvn` on PATH', { cause: result.spawnError });
  }
  if (result.exitCode !== 0) {
    const how = result.timedOut ? `did not finish within ${MAVEN_TIMEOUT_MS / 1000} s` : `exited with code ${String(result.exitCode)}`;
    throw new DevKafkaError(
      `Maven ${how} while fetching Kafka ${KAFKA_VERSION} into ${outputDir}; last lines of its output:\n${tailLines(result.output, LOG_TAIL_LINES)}`,
      'check that Maven Central (repo.maven.apache.org) is reachable; Maven takes proxies and mirrors from ~/.m2/settings.xml',
    );
  }
}

async function assertServerJarPresent(libDir: string): Promise<void> {
  const serverJar = join(libDir, `kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar`);
  if (!(await exists(serverJar))) {
    throw new DevKafkaError(`Maven reported success but ${serverJar} is missing`, 'delete the cache directory and try again');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The broker process

export interface StartKafkaOptions {
  readonly runtime: KafkaRuntime;
  /** Holds `server.properties` and the KRaft log directory; reused as is when already formatted. */
  readonly dataDir: string;
  readonly port?: number;
  readonly controllerPort?: number;
  /** The broker's stdout and stderr are appended here. */
  readonly logFile: string;
  readonly heapMb?: number;
  /** Broker settings that win over the defaults of {@link brokerProperties}. */
  readonly extraProperties?: Readonly<Record<string, string | number | boolean>>;
  readonly readyTimeoutMs?: number;
}

export interface KafkaBroker {
  /** `127.0.0.1:<port>`, for a client's `brokers` list. */
  readonly bootstrap: string;
  /** The JVM's pid (also its process group id); changes on restart. */
  readonly pid: number;
  readonly port: number;
  readonly controllerPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly running: boolean;
  /** SIGTERM, then SIGKILL after 20 s; resolves once the process has exited. */
  stop(): Promise<void>;
  /** Sends a signal without waiting (SIGKILL by default): for fault tests. */
  kill(signal?: NodeJS.Signals): void;
  /** Stops the broker if it runs and starts it again on the same ports and data. */
  restart(): Promise<void>;
}

/** Starts a single-node Kafka and resolves once it answers metadata requests. */
export async function startKafka(options: StartKafkaOptions): Promise<KafkaBroker> {
  const [port, controllerPort] = await resolvePorts(options.port, options.controllerPort);
  const layout = brokerLayout(options.dataDir);
  await mkdir(layout.logDir, { recursive: true });
  const properties = { ...brokerProperties({ port, controllerPort, logDir: layout.logDir }), ...options.extraProperties };
  await writeFile(layout.propertiesFile, formatProperties(properties));
  if (!(await exists(layout.formattedMarker))) await formatStorage(options.runtime, layout.propertiesFile, options.logFile);
  const broker = new ManagedBroker({
    clusterId: await readClusterId(layout.formattedMarker),
    runtime: options.runtime,
    dataDir: options.dataDir,
    propertiesFile: layout.propertiesFile,
    logFile: options.logFile,
    port,
    controllerPort,
    heapMb: options.heapMb ?? DEFAULT_HEAP_MB,
    readyTimeoutMs: options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS,
  });
  await broker.start();
  return broker;
}

async function resolvePorts(port: number | undefined, controllerPort: number | undefined): Promise<[number, number]> {
  if (port !== undefined && controllerPort !== undefined) return [port, controllerPort];
  // A port the caller chose may not be bound yet, so the kernel could offer it again: skip it.
  const candidates = (await freePorts(3)).filter((p) => p !== port && p !== controllerPort);
  return [port ?? candidates.shift()!, controllerPort ?? candidates.shift()!];
}

function brokerLayout(dataDir: string): { propertiesFile: string; logDir: string; formattedMarker: string } {
  const logDir = join(dataDir, 'kraft');
  return { propertiesFile: join(dataDir, 'server.properties'), logDir, formattedMarker: join(logDir, 'meta.properties') };
}

/** The broker settings used unless overridden: one node, quick to start, no surprises for tests. */
export function brokerProperties(at: { port: number; controllerPort: number; logDir: string }): Record<string, string | number | boolean> {
  return {
    'process.roles': 'broker,controller',
    'node.id': 1,
    'controller.quorum.voters': `1@127.0.0.1:${at.controllerPort}`,
    listeners: `PLAINTEXT://127.0.0.1:${at.port},CONTROLLER://127.0.0.1:${at.controllerPort}`,
    'advertised.listeners': `PLAINTEXT://127.0.0.1:${at.port}`,
    'controller.listener.names': 'CONTROLLER',
    'inter.broker.listener.name': 'PLAINTEXT',
    'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    'log.dirs': at.logDir,
    // One node: every replication factor and ISR minimum must be 1 or topics cannot be created.
    'default.replication.factor': 1,
    'min.insync.replicas': 1,
    'offsets.topic.replication.factor': 1,
    'transaction.state.log.replication.factor': 1,
    'transaction.state.log.min.isr': 1,
    // The default 50 partitions of each internal topic make the first group join and first transaction slow.
    'offsets.topic.num.partitions': 10,
    'transaction.state.log.num.partitions': 10,
    'num.partitions': 3,
    // Topics are created on purpose, with their partitions and settings; a typo must fail, not create a topic.
    'auto.create.topics.enable': false,
    'delete.topic.enable': true,
    'message.max.bytes': 10_485_760,
    'replica.fetch.max.bytes': 10_485_760,
    'log.retention.ms': -1,
    // Groups form at once instead of waiting 3 s for more members, and tests may use short session timeouts.
    'group.initial.rebalance.delay.ms': 0,
    'group.min.session.timeout.ms': 1000,
    // After a SIGKILL the restarted broker may only register once its old session expired (default 9 s);
    // a shorter session turns a broker-crash test's 15 s restart into a few seconds.
    'broker.session.timeout.ms': 4000,
    'broker.heartbeat.interval.ms': 1000,
    // The cleaner's 128 MB dedupe buffer would take a quarter of the small test heap.
    'log.cleaner.dedupe.buffer.size': 33_554_432,
    // Two cores: the default thread pools only compete with the tests for them.
    'num.network.threads': 2,
    'num.io.threads': 4,
    'background.threads': 4,
  };
}

function formatProperties(properties: Readonly<Record<string, string | number | boolean>>): string {
  const lines = Object.entries(properties).map(([key, value]) => `${key}=${escapePropertyValue(String(value))}`);
  return `# Generated by highwater for a local test broker.\n${lines.join('\n')}\n`;
}

function escapePropertyValue(value: string): string {
  if (/[\r\n]/.test(value)) throw new TypeError(`a Kafka property value cannot contain a line break: ${JSON.stringify(value)}`);
  return value.replaceAll('\\', '\\\\');
}

/** Formats the KRaft log directory; the cluster id is generated here to spare one JVM start. */
async function formatStorage(runtime: KafkaRuntime, propertiesFile: string, logFile: string): Promise<void> {
  // The tool runs for a second: compiling only with C1 makes that second shorter.
  const args = ['-XX:TieredStopAtLevel=1', ...classpathArgs(runtime), 'kafka.tools.StorageTool', 'format', '--ignore-formatted', '-t', newClusterId(), '-c', propertiesFile];
  const result = await runCollecting('java', args, undefined, 120_000);
  await appendToLog(logFile, `=== highwater: formatting KRaft storage (${propertiesFile}) ===\n${result.output}`);
  if (result.exitCode !== 0 || result.spawnError !== undefined) {
    const why = result.spawnError?.message ?? `exit code ${String(result.exitCode)}`;
    throw new DevKafkaError(`formatting the Kafka storage failed (${why}):\n${tailLines(result.output, LOG_TAIL_LINES)}`, 'delete the data directory and try again');
  }
}

async function readClusterId(metaProperties: string): Promise<string> {
  const match = /^cluster\.id=(.+)$/m.exec(await readFile(metaProperties, 'utf8'));
  if (match === null) throw new DevKafkaError(`${metaProperties} names no cluster.id`, 'delete the data directory and try again');
  return match[1]!.trim();
}

/** A Kafka cluster id: 16 random bytes, URL-safe base64 without padding; never starting with `-`, as Kafka's own. */
function newClusterId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (!id.startsWith('-')) return id;
  }
}

function classpathArgs(runtime: KafkaRuntime): string[] {
  // `lib/*` is expanded by the JVM itself, not by a shell.
  return ['-cp', join(runtime.libDir, '*'), `-Dlog4j.configuration=file:${runtime.log4jConfig}`];
}

interface BrokerSpec {
  /** From meta.properties: tells our broker apart from any other that might answer on the same port. */
  readonly clusterId: string;
  readonly runtime: KafkaRuntime;
  readonly dataDir: string;
  readonly propertiesFile: string;
  readonly logFile: string;
  readonly port: number;
  readonly controllerPort: number;
  readonly heapMb: number;
  readonly readyTimeoutMs: number;
}

interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly error?: Error;
}

class ManagedBroker implements KafkaBroker {
  private child: ChildProcess | undefined;
  private exitStatus: ExitStatus | undefined;
  private exited: Promise<ExitStatus> = Promise.resolve({ code: null, signal: null });

  constructor(private readonly spec: BrokerSpec) {}

  get bootstrap(): string {
    return `127.0.0.1:${this.spec.port}`;
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  get port(): number {
    return this.spec.port;
  }

  get controllerPort(): number {
    return this.spec.controllerPort;
  }

  get dataDir(): string {
    return this.spec.dataDir;
  }

  get logFile(): string {
    return this.spec.logFile;
  }

  get running(): boolean {
    return this.child !== undefined && this.exitStatus === undefined;
  }

  async start(): Promise<void> {
    if (this.running) return;
    await this.spawnJvm();
    try {
      await this.waitUntilAnswering();
    } catch (err) {
      // A broker that did not come up must not linger holding the ports and the data directory.
      this.kill('SIGKILL');
      await this.exited;
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.kill('SIGTERM');
    if (await this.exitedWithin(STOP_GRACE_MS)) return;
    this.kill('SIGKILL');
    await this.exited;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) signalProcessGroup(this.pid, signal);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** For the process exit hook: it cannot wait, so the broker is killed outright. */
  killNow(): void {
    this.kill('SIGKILL');
  }

  private async spawnJvm(): Promise<void> {
    await appendToLog(this.spec.logFile, `\n=== highwater: starting Kafka ${this.spec.runtime.version} on ${this.bootstrap} at ${new Date().toISOString()} ===\n`);
    const log = await open(this.spec.logFile, 'a');
    try {
      // detached: its own process group, so one signal reaches the whole JVM and the terminal's Ctrl-C does not.
      const child = spawn('java', this.jvmArgs(), { cwd: this.spec.dataDir, detached: true, stdio: ['ignore', log.fd, log.fd] });
      this.track(child);
    } finally {
      // The child holds its own copy of the descriptor.
      await log.close();
    }
  }

  private jvmArgs(): string[] {
    return [
      `-Xmx${this.spec.heapMb}m`,
      '-XX:+ExitOnOutOfMemoryError',
      '-Djava.awt.headless=true',
      ...classpathArgs(this.spec.runtime),
      'kafka.Kafka',
      this.spec.propertiesFile,
    ];
  }

  private track(child: ChildProcess): void {
    this.child = child;
    this.exitStatus = undefined;
    this.exited = new Promise((resolve) => {
      const settle = (status: ExitStatus): void => {
        if (this.child !== child || this.exitStatus !== undefined) return;
        this.exitStatus = status;
        liveBrokers.delete(this);
        resolve(status);
      };
      child.once('exit', (code, signal) => settle({ code, signal }));
      child.once('error', (error) => settle({ code: null, signal: null, error }));
    });
    // The broker must not keep the Node process alive on its own; the exit hook kills it when Node goes.
    child.unref();
    if (child.pid === undefined) return;
    registerLiveBroker(this);
    spawnOrphanWatchdog(child.pid);
  }

  private async exitedWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    try {
      return await Promise.race([this.exited.then(() => true as const), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async waitUntilAnswering(): Promise<void> {
    const deadline = Date.now() + this.spec.readyTimeoutMs;
    let lastError: Error | undefined;
    while (Date.now() < deadline) {
      if (!this.running) throw await this.startupFailure(`Kafka exited during startup (${describeExit(this.exitStatus)})`);
      try {
        if (await brokerAnswers(this.bootstrap, this.spec.clusterId)) return;
      } catch (err) {
        lastError = coerceError(err);
      }
      await sleep(READY_POLL_INTERVAL_MS);
    }
    const cause = lastError === undefined ? '' : ` (last error: ${lastError.message})`;
    throw await this.startupFailure(`Kafka on ${this.bootstrap} did not answer within ${this.spec.readyTimeoutMs / 1000} s${cause}`);
  }

  private async startupFailure(message: string): Promise<DevKafkaError> {
    const tail = await readLogTail(this.spec.logFile);
    return new DevKafkaError(`${message}; last lines of ${this.spec.logFile}:\n${tail}`, 'read the broker log named in the message; a port in use or a corrupt data directory are the usual causes');
  }
}

/**
 * True once the broker lists itself in the cluster metadata, i.e. it is unfenced and serves clients. The cluster
 * id must be ours: a stray broker already on the port would otherwise pass for the one that failed to bind it.
 */
async function brokerAnswers(bootstrap: string, clusterId: string): Promise<boolean> {
  const cluster = await probeCluster(bootstrap);
  if (cluster.clusterId !== clusterId) throw new Error(`${bootstrap} is a different Kafka (cluster ${cluster.clusterId}, expected ${clusterId})`);
  return cluster.brokers > 0;
}

function describeExit(status: ExitStatus | undefined): string {
  if (status === undefined) return 'still running';
  if (status.error !== undefined) return `could not be started: ${status.error.message}`;
  return status.signal !== null ? `killed by ${status.signal}` : `exit code ${String(status.code)}`;
}

function signalProcessGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    // ESRCH: it exited between our check and the signal, which is what we wanted anyway.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Brokers must not outlive the Node process that started them (a test run that crashed, a demo left with Ctrl-C).

const liveBrokers = new Set<ManagedBroker>();
let exitHookInstalled = false;
const FATAL_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function registerLiveBroker(broker: ManagedBroker): void {
  liveBrokers.add(broker);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killLiveBrokers);
  for (const signal of FATAL_SIGNALS) process.on(signal, onFatalSignal);
}

function killLiveBrokers(): void {
  for (const broker of liveBrokers) broker.killNow();
}

/**
 * A signal whose default action ends Node skips the 'exit' event. If nobody else handles it, we kill the
 * brokers and let the signal take its default course; if the program has its own handler, it owns the shutdown
 * (and stops the brokers in order), and the 'exit' hook is still there as the last resort.
 */
function onFatalSignal(signal: NodeJS.Signals): void {
  if (process.listenerCount(signal) > 1) return;
  killLiveBrokers();
  process.off(signal, onFatalSignal);
  process.kill(process.pid, signal);
}

/**
 * The 'exit' hook cannot run when Node itself is SIGKILLed (a CI timeout, an OOM kill). A one-line shell loop
 * covers that: it kills the broker's process group once the Node process is gone, and ends by itself as soon as
 * the broker does.
 */
function spawnOrphanWatchdog(brokerPid: number): void {
  const script = 'while kill -0 "$1" 2>/dev/null; do if ! kill -0 "$2" 2>/dev/null; then kill -9 "-$1"; exit 0; fi; sleep 1; done';
  const watchdog = spawn('/bin/sh', ['-c', script, 'highwater-kafka-watchdog', String(brokerPid), String(process.pid)], { detached: true, stdio: 'ignore' });
  watchdog.once('error', (err) => {
    // Without /bin/sh only the 'exit' hook protects against orphans; say so rather than fail the start.
    process.emitWarning(`highwater: no orphan watchdog for Kafka pid ${brokerPid}: ${err.message}`);
  });
  watchdog.unref();
}

// ---------------------------------------------------------------------------------------------------------------
// Small process and file helpers

interface CollectedRun {
  readonly exitCode: number | null;
  readonly output: string;
  readonly timedOut: boolean;
  readonly spawnError?: Error;
}

const MAX_COLLECTED_OUTPUT = 256 * 1024;

/** Runs a command to its end, keeping the tail of stdout and stderr together; never rejects. */
function runCollecting(command: string, args: readonly string[], cwd: string | undefined, timeoutMs: number, watch?: { write(chunk: Buffer): void; end(): void }): Promise<CollectedRun> {
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    const child = spawn(command, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const append = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-MAX_COLLECTED_OUTPUT);
      watch?.write(chunk);
    };
    child.stdout.on('data', append);
    child.stderr.on('data', append);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (spawnError) => {
      clearTimeout(timer);
      resolve({ exitCode: null, output, timedOut, spawnError });
    });
    child.once('close', (exitCode) => {
      clearTimeout(timer);
      watch?.end();
      resolve({ exitCode, output, timedOut });
    });
  });
}

/** stdout and stderr of a short command (`java -version` writes to stderr). */
function runForOutput(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: 30_000 }, (error, stdout, stderr) => {
      if (error !== null) reject(error);
      else resolve(`${stdout}${stderr}`);
    });
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    // Any failure to reach the file means we must (re)create it; the creation reports real I/O problems.
    return false;
  }
}

async function appendToLog(logFile: string, text: string): Promise<void> {
  await writeFile(logFile, text, { flag: 'a' });
}

/** The last lines of a log file, for error messages; a missing log is reported as such rather than hidden. */
export async function readLogTail(logFile: string, lines: number = LOG_TAIL_LINES): Promise<string> {
  try {
    return tailLines(await readFileEnd(logFile, LOG_TAIL_BYTES), lines);
  } catch (err) {
    return `(cannot read ${logFile}: ${coerceError(err).message})`;
  }
}

// A broker log grows over a long test run; the tail is all an error message needs.
const LOG_TAIL_BYTES = 64 * 1024;

async function readFileEnd(path: string, maxBytes: number): Promise<string> {
  const file = await open(path, 'r');
  try {
    const { size } = await file.stat();
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    await file.read(buffer, 0, length, size - length);
    return buffer.toString('utf8');
  } finally {
    await file.close();
  }
}

function tailLines(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}
