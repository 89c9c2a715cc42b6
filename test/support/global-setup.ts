/**
 * Global setup of the integration project: runs once per `vitest run`, in the main Vitest process.
 *
 * It checks that PostgreSQL answers, then starts one Kafka broker for the whole run (or uses the one named by
 * HIGHWATER_TEST_KAFKA_BROKERS). Tests run in worker processes, so a broker they stop and start must still belong
 * to this process, or it would die with the worker that restarted it: a tiny HTTP control endpoint on 127.0.0.1
 * lets `stopBroker()`/`startBroker()` in test/support/kafka.ts ask this process to do it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { ensureKafkaRuntime, startKafka, type KafkaBroker, KAFKA_VERSION } from '../../src/dev/kafka/kafka.js';
import { coerceError } from '../../src/errors.js';

export const DEFAULT_TEST_PG_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

/** What tests learn about the managed broker; `null` in `kafkaControl` when an external Kafka is used. */
export interface KafkaControlInfo {
  /** Base URL of the control endpoint (POST /broker/stop, /broker/start, /broker/kill?signal=…; GET /broker). */
  readonly controlUrl: string;
  /** The pid when the run started; it changes on every restart, GET /broker has the current one. */
  readonly pid: number;
  readonly port: number;
  readonly controllerPort: number;
  readonly dataDir: string;
  readonly runtimeDir: string;
  readonly logFile: string;
}

export interface BrokerStatus {
  readonly running: boolean;
  readonly pid: number;
}

declare module 'vitest' {
  export interface ProvidedContext {
    kafkaBrokers: string[];
    kafkaControl: KafkaControlInfo | null;
    kafkaLogFile: string | null;
    pgUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const pgUrl = process.env.HIGHWATER_TEST_PG_URL || DEFAULT_TEST_PG_URL;
  await assertPostgresAnswers(pgUrl);
  project.provide('pgUrl', pgUrl);

  const externalBrokers = parseBrokerList(process.env.HIGHWATER_TEST_KAFKA_BROKERS);
  if (externalBrokers.length > 0) {
    project.provide('kafkaBrokers', externalBrokers);
    project.provide('kafkaControl', null);
    project.provide('kafkaLogFile', null);
    return async () => {};
  }
  return startManagedKafka(project);
}

function parseBrokerList(value: string | undefined): string[] {
  return (value ?? '').split(',').map((b) => b.trim()).filter((b) => b !== '');
}

async function assertPostgresAnswers(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('select 1');
  } catch (err) {
    throw new Error(
      `PostgreSQL does not answer at ${withoutPassword(url)}: ${coerceError(err).message}\n` +
        'Start it (Debian: `pg_ctlcluster --skip-systemctl-redirect 15 main start`) or set HIGHWATER_TEST_PG_URL to a server the tests may create databases on.',
      { cause: err },
    );
  } finally {
    await client.end();
  }
}

function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    // Not a URL pg would accept either; the connection error that follows says so.
    return '(unparseable HIGHWATER_TEST_PG_URL)';
  }
}

const RUN_DIR_PREFIX = 'highwater-it-';
// Present while the run that owns the directory is alive; removed when a failed run keeps its directory on purpose.
const OWNER_FILE = 'owner.pid';

async function startManagedKafka(project: TestProject): Promise<() => Promise<void>> {
  const startedAt = Date.now();
  const runtime = await ensureKafkaRuntime();
  await removeAbandonedRunDirs();
  const runDir = await mkdtemp(join(tmpdir(), RUN_DIR_PREFIX));
  await writeFile(join(runDir, OWNER_FILE), String(process.pid));
  const logFile = join(runDir, 'kafka.log');
  const broker = await startKafka({ runtime, dataDir: join(runDir, 'kafka'), logFile });
  let control: Server;
  try {
    control = await startControlServer(broker);
  } catch (err) {
    await broker.stop();
    throw err;
  }
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(1);
  console.log(`[highwater] Kafka ${KAFKA_VERSION} on ${broker.bootstrap} ready in ${seconds} s (pid ${broker.pid}, log ${logFile})`);
  project.provide('kafkaBrokers', [broker.bootstrap]);
  project.provide('kafkaLogFile', logFile);
  project.provide('kafkaControl', {
    controlUrl: `http://127.0.0.1:${serverPort(control)}`,
    pid: broker.pid,
    port: broker.port,
    controllerPort: broker.controllerPort,
    dataDir: broker.dataDir,
    runtimeDir: runtime.dir,
    logFile,
  });
  return async () => {
    await closeServer(control);
    await broker.stop();
    await removeRunDirUnlessFailed(project, runDir);
  };
}

/** The broker's data and log stay for inspection when a test failed (as a failed test's database does). */
async function removeRunDirUnlessFailed(project: TestProject, runDir: string): Promise<void> {
  const failed = project.vitest.state.getCountOfFailedTests();
  if (failed > 0 || process.env.HIGHWATER_TEST_KEEP_KAFKA) {
    await rm(join(runDir, OWNER_FILE), { force: true });
    console.log(`[highwater] kept the Kafka data and log in ${runDir}`);
    return;
  }
  await rm(runDir, { recursive: true, force: true });
}

/**
 * Runs interrupted before their teardown (Ctrl-C, a killed CI job) leave their directory behind with the pid of a
 * process that no longer exists; those are removed. Directories of live runs (other terminals) and of failed runs
 * kept on purpose have no such mark and are left alone.
 */
async function removeAbandonedRunDirs(): Promise<void> {
  const names = (await readdir(tmpdir())).filter((name) => name.startsWith(RUN_DIR_PREFIX));
  for (const name of names) {
    const dir = join(tmpdir(), name);
    const owner = await readOwnerPid(dir);
    if (owner !== undefined && !processExists(owner)) await rm(dir, { recursive: true, force: true });
  }
}

async function readOwnerPid(dir: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(join(dir, OWNER_FILE), 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    // No owner file: a kept directory or not one of ours; either way it is not ours to remove.
    return undefined;
  }
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Control endpoint: lets tests in worker processes stop, kill and start the broker this process owns.

function startControlServer(broker: KafkaBroker): Promise<Server> {
  let queue: Promise<unknown> = Promise.resolve();
  // One operation at a time: a start racing a stop would leave the broker in whichever state finished last.
  const serialised = <T>(operation: () => Promise<T>): Promise<T> => {
    const result = queue.then(operation);
    // The caller gets the failure through `result`; the queue only needs to know the operation is over.
    queue = result.catch(() => undefined);
    return result;
  };
  const server = createServer((request, response) => {
    void serialised(() => handleControlRequest(broker, request))
      .then((status) => reply(response, 200, status))
      .catch((err: unknown) => reply(response, 500, { error: coerceError(err).message }));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function handleControlRequest(broker: KafkaBroker, request: IncomingMessage): Promise<BrokerStatus> {
  const url = new URL(request.url ?? '/', 'http://control');
  const route = `${request.method ?? 'GET'} ${url.pathname}`;
  switch (route) {
    case 'GET /broker':
      break;
    case 'POST /broker/stop':
      await broker.stop();
      break;
    case 'POST /broker/start':
      // restart() also waits for a broker that was killed but has not exited yet.
      if (!broker.running) await broker.restart();
      break;
    case 'POST /broker/kill':
      await killBroker(broker, url.searchParams.get('signal') ?? 'SIGKILL');
      break;
    default:
      throw new Error(`unknown control request ${route}`);
  }
  return { running: broker.running, pid: broker.pid };
}

const KILL_SIGNALS = new Set<NodeJS.Signals>(['SIGKILL', 'SIGTERM', 'SIGSTOP', 'SIGCONT']);

async function killBroker(broker: KafkaBroker, signal: string): Promise<void> {
  if (!KILL_SIGNALS.has(signal as NodeJS.Signals)) throw new Error(`signal ${signal} is not one of ${[...KILL_SIGNALS].join(', ')}`);
  broker.kill(signal as NodeJS.Signals);
  // After SIGKILL the caller expects the broker gone; stop() waits for the exit (its SIGTERM finds no one).
  if (signal === 'SIGKILL') await broker.stop();
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

function serverPort(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the control server has no port');
  return address.port;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
