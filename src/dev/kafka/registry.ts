/**
 * A real Confluent-compatible schema registry for integration tests and the demo,
 * without Docker: Apicurio Registry's Quarkus "all" distribution, fetched from Maven
 * Central with the local `mvn`, run on the local JVM (Java 17+).
 *
 * Apicurio serves the Confluent Schema Registry REST API under /apis/ccompat/v7, which
 * is what @kafkajs/confluent-schema-registry talks to. See docs/schema-registry.md for
 * what was tried, the numbers observed and the client quirks.
 *
 * Only node built-ins are used. Nothing happens at import time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { downloadReporter } from './maven-progress.js';

/**
 * Pinned Apicurio Registry version. 3.0.9 is the newest release found on Maven Central
 * whose classes run on Java 17 (3.3.x is compiled for Java 21, which Debian 12 lacks).
 */
export const APICURIO_VERSION = '3.0.9';

/** Maven coordinates of the prebuilt Quarkus distribution (zip holding runner jar + lib/). */
export const APICURIO_ARTIFACT = {
  groupId: 'io.apicurio',
  artifactId: 'apicurio-registry-app',
  version: APICURIO_VERSION,
  type: 'zip',
  classifier: 'all',
} as const;

/** Path under the server root where the Confluent-compatible API lives. */
export const CCOMPAT_PATH = '/apis/ccompat/v7';

/** Kafka topics used when the registry stores its data in Kafka (kafkasql storage). */
export const KAFKASQL_TOPICS = {
  journal: 'highwater-registry-journal',
  snapshots: 'highwater-registry-snapshots',
  events: 'highwater-registry-events',
} as const;

export interface RegistryRuntime {
  version: string;
  /** Directory holding the unpacked distribution (runner jar + lib/). */
  home: string;
  /** The Quarkus legacy-jar runner; its manifest Class-Path points into lib/. */
  runnerJar: string;
  /** Java launcher to use (JAVA_HOME/bin/java if set, else `java` on PATH). */
  javaBin: string;
}

export interface StartRegistryOptions {
  runtime: RegistryRuntime;
  /** Port to bind on 127.0.0.1; a free one is picked when omitted. */
  port?: number;
  /**
   * When set, store schemas in Kafka (Apicurio "kafkasql" storage) so they survive a
   * registry restart, like Confluent's _schemas topic. When omitted, storage is an
   * in-memory H2 database and everything is lost on stop (what tests usually want).
   */
  kafkaBootstrap?: string;
  /** JVM stdout+stderr are appended here; its tail is quoted in start-up errors. */
  logFile: string;
  /** How long to wait for the API to answer. Default 90 s (kafkasql start is slower). */
  startTimeoutMs?: number;
}

export interface RunningRegistry {
  /** Base URL for @kafkajs/confluent-schema-registry's `host`, e.g. http://127.0.0.1:PORT/apis/ccompat/v7 */
  url: string;
  stop(): Promise<void>;
}

const RUNNER_JAR = `apicurio-registry-app-${APICURIO_VERSION}-runner.jar`;
const STOP_GRACE_MS = 10_000;
const POLL_INTERVAL_MS = 250;
const LOG_TAIL_LINES = 40;

// ---------------------------------------------------------------------------
// Fetching
// ---------------------------------------------------------------------------

/**
 * Make sure the pinned distribution is unpacked under `cacheDir` and return how to run
 * it. Fast no-op when already there. Maven does both the download (through ~/.m2, so a
 * second cache dir costs no second download) and the unzip, because node has no
 * built-in zip reader and `unzip` is not guaranteed to be installed.
 */
export async function ensureRegistryRuntime(cacheDir: string, options: { onDownload?: (line: string) => void } = {}): Promise<RegistryRuntime> {
  const home = join(cacheDir, 'dist');
  const runtime: RegistryRuntime = {
    version: APICURIO_VERSION,
    home,
    runnerJar: join(home, RUNNER_JAR),
    javaBin: javaBinary(),
  };
  // The dist dir only ever appears by an atomic rename of a complete unpack, so the
  // runner jar being there means the whole runtime is there.
  if (existsSync(runtime.runnerJar)) return runtime;

  await mkdir(cacheDir, { recursive: true });
  const pom = join(cacheDir, 'pom.xml');
  await writeFile(pom, fetchPom());
  // Unpack into a private directory first so concurrent callers (parallel test
  // workers) never see, or clobber, a half-extracted tree.
  const staging = join(cacheDir, `dist.tmp-${process.pid}-${Date.now()}`);
  try {
    await runMaven(['-B', ...(options.onDownload ? [] : ['-q']), '-f', pom, 'dependency:unpack', `-Dhw.dist.dir=${staging}`], options.onDownload);
    if (!existsSync(join(staging, RUNNER_JAR))) {
      throw new Error(`Maven unpacked ${artifactString()} but ${RUNNER_JAR} is missing in ${staging}`);
    }
    await publishStaging(staging, home);
  } finally {
    await rm(staging, { recursive: true, force: true });
    await rm(`${staging}.markers`, { recursive: true, force: true });
  }
  return runtime;
}

/** Rename staging into place; losing the race to another process is fine. */
async function publishStaging(staging: string, home: string): Promise<void> {
  try {
    await rename(staging, home);
  } catch (err) {
    if (existsSync(join(home, RUNNER_JAR))) return; // someone else finished first
    throw err;
  }
}

/**
 * Throwaway pom whose only job is `dependency:unpack` of the pinned artifact.
 *
 * maven-dependency-plugin is pinned to 2.8 on purpose: 3.x insists on reading the
 * artifact's pom *and its parent* (io.apicurio:apicurio-registry:pom) before unpacking,
 * and fails when that parent can't be fetched (it could not be from the Maven Central
 * mirror this was developed against). 2.8 just fetches the zip. It is also the version
 * Maven 3.8 itself uses for command-line `dependency:` goals, so usually already cached.
 */
function fetchPom(): string {
  const a = APICURIO_ARTIFACT;
  return `<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by highwater src/dev/kafka/registry.ts; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.highwater</groupId>
  <artifactId>registry-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>2.8</version>
        <configuration>
          <!-- 2.8 skips an artifact it finds a marker for, even if the output dir is gone:
               keep markers per run (deleted afterwards) and always overwrite. -->
          <markersDirectory>\${hw.dist.dir}.markers</markersDirectory>
          <overWriteReleases>true</overWriteReleases>
          <artifactItems>
            <artifactItem>
              <groupId>${a.groupId}</groupId>
              <artifactId>${a.artifactId}</artifactId>
              <version>${a.version}</version>
              <type>${a.type}</type>
              <classifier>${a.classifier}</classifier>
              <outputDirectory>\${hw.dist.dir}</outputDirectory>
            </artifactItem>
          </artifactItems>
        </configuration>
      </plugin>
    </plugins>
  </build>
</project>
`;
}

function artifactString(): string {
  const a = APICURIO_ARTIFACT;
  return `${a.groupId}:${a.artifactId}:${a.version}:${a.type}:${a.classifier}`;
}

function javaBinary(): string {
  const javaHome = process.env['JAVA_HOME'];
  return javaHome ? join(javaHome, 'bin', 'java') : 'java';
}

/** Run mvn, keeping its output only to explain a failure. */
function runMaven(args: string[], onDownload?: (line: string) => void): Promise<void> {
  const progress = onDownload ? downloadReporter(onDownload) : undefined;
  return new Promise((resolve, reject) => {
    const child = spawn('mvn', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-8_000);
      progress?.write(chunk);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) =>
      reject(new Error(`cannot run mvn (is Maven installed and on PATH?): ${err.message}`)),
    );
    child.on('exit', (code, signal) => {
      progress?.end();
      if (code === 0) resolve();
      else reject(new Error(`mvn ${args.join(' ')} failed (${signal ?? `exit ${code}`}):\n${output}`));
    });
  });
}

// ---------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------

/** Start the registry JVM and resolve once the ccompat API answers. */
export async function startRegistry(opts: StartRegistryOptions): Promise<RunningRegistry> {
  const port = opts.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}${CCOMPAT_PATH}`;
  const child = spawnJvm(opts, port);
  const exited = exitPromise(child);
  // A JVM left behind by a crashed test run would keep its port and ~200 MB; kill it
  // if this node process exits without calling stop().
  const onExit = (): void => void child.kill('SIGKILL');
  process.once('exit', onExit);

  const stop = async (): Promise<void> => {
    process.removeListener('exit', onExit);
    await stopChild(child, exited);
  };
  try {
    await waitUntilReady(url, exited, opts.startTimeoutMs ?? 90_000);
  } catch (err) {
    await stop();
    const tail = await logTail(opts.logFile);
    throw new Error(`${(err as Error).message}\n--- last lines of ${opts.logFile} ---\n${tail}`);
  }
  return { url, stop };
}

function spawnJvm(opts: StartRegistryOptions, port: number): ChildProcess {
  const args = [...jvmFlags(), ...registryProperties(port, opts.kafkaBootstrap), '-jar', opts.runtime.runnerJar];
  // The log gets its own fd so the JVM never blocks on a pipe nobody reads.
  const logFd = openSync(opts.logFile, 'a');
  try {
    return spawn(opts.runtime.javaBin, args, {
      cwd: opts.runtime.home,
      stdio: ['ignore', logFd, logFd],
      // Own process group: a Ctrl-C in the demo's terminal must not kill the registry
      // before highwater has shut down in order; stop() (or our exit hook) ends it.
      detached: true,
    });
  } finally {
    closeSync(logFd); // the child holds its own copy
  }
}

/**
 * Small heap and C1-only JIT: measured ~3 s start-up and ~190 MB RSS on 2 cores,
 * against ~4.5 s and ~235 MB with JVM defaults; throughput is irrelevant here.
 */
function jvmFlags(): string[] {
  return ['-Xmx128m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1'];
}

/** Quarkus/Apicurio settings, as system properties (they beat application.properties). */
function registryProperties(port: number, kafkaBootstrap: string | undefined): string[] {
  const props: Record<string, string> = {
    'quarkus.http.host': '127.0.0.1', // never listen beyond loopback
    'quarkus.http.port': String(port),
    'quarkus.http.access-log.enabled': 'false', // one line per request drowns the log
  };
  if (kafkaBootstrap) {
    Object.assign(props, {
      'apicurio.storage.kind': 'kafkasql',
      'apicurio.kafkasql.bootstrap.servers': kafkaBootstrap,
      'apicurio.kafkasql.topic': KAFKASQL_TOPICS.journal,
      'apicurio.kafkasql.snapshots.topic': KAFKASQL_TOPICS.snapshots,
      'apicurio.events.kafka.topic': KAFKASQL_TOPICS.events,
      'apicurio.events.kafka.config.bootstrap.servers': kafkaBootstrap,
    });
  }
  // Default storage (no Kafka): apicurio.storage.kind=sql on in-memory H2.
  return Object.entries(props).map(([k, v]) => `-D${k}=${v}`);
}

/** Ask the OS for a free port. Another process could take it before the JVM binds; rare on a test box. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not get a free port'))));
    });
  });
}

type ExitInfo = { code: number | null; signal: NodeJS.Signals | null; error?: Error };

/** Settles once, when the child is gone (or could not be spawned at all). */
function exitPromise(child: ChildProcess): Promise<ExitInfo> {
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
}

/** Poll GET {url}/subjects until 200, the JVM dies, or the deadline passes. */
async function waitUntilReady(url: string, exited: Promise<ExitInfo>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let died: ExitInfo | undefined;
  void exited.then((info) => (died = info));
  while (Date.now() < deadline) {
    if (died) throw new Error(`schema registry JVM exited before becoming ready: ${describeExit(died)}`);
    if (await answers(`${url}/subjects`)) return;
    await sleep(POLL_INTERVAL_MS);
  }
  throw new Error(`schema registry did not answer at ${url} within ${timeoutMs} ms`);
}

async function answers(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false; // not listening yet
  }
}

/** SIGTERM lets Quarkus shut down (≈1.5 s observed); SIGKILL if it hangs. Idempotent. */
async function stopChild(child: ChildProcess, exited: Promise<ExitInfo>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const graceful = await Promise.race([exited.then(() => true), sleep(STOP_GRACE_MS).then(() => false)]);
  if (!graceful) {
    child.kill('SIGKILL');
    await exited;
  }
}

function describeExit(info: ExitInfo): string {
  if (info.error) return `spawn failed (is Java 17+ installed?): ${info.error.message}`;
  return info.signal ? `killed by ${info.signal}` : `exit code ${info.code}`;
}

async function logTail(file: string): Promise<string> {
  try {
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    return lines.slice(-LOG_TAIL_LINES).join('\n');
  } catch {
    return '(log file unreadable)';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
