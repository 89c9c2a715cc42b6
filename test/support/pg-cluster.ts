/**
 * A private PostgreSQL cluster for fault tests that stop, kill and restart the database: initdb + pg_ctl on a free
 * port in a temporary directory. Never the machine's shared server on 5432, which every other test (and every
 * other session on the machine) uses. When the tests run as root, the cluster runs as the `postgres` user
 * (PostgreSQL refuses to run as root).
 */
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePorts } from '../../src/dev/kafka/ports.js';

export const PG_BIN = process.env.HIGHWATER_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface PgCluster {
  readonly port: number;
  readonly dataDir: string;
  /** A connection URL for `database` as the `postgres` superuser (trust authentication, loopback only). */
  url(database?: string): string;
  /** Fast shutdown (sessions are ended, the server checkpoints); resolves once it is down. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** SIGKILL of the postmaster: a crash; the next start runs crash recovery. */
  kill(): Promise<void>;
  readonly running: boolean;
  /** Stops it and removes its directory. */
  destroy(): Promise<void>;
}

export async function startPgCluster(options: { settings?: Readonly<Record<string, string>> } = {}): Promise<PgCluster> {
  const workDir = await mkdtemp(join(tmpdir(), 'hw-pg-cluster-'));
  const dataDir = join(workDir, 'data');
  const [port] = await freePorts(1);
  await mkdir(dataDir, { recursive: true });
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    // mkdtemp's directory is private to root; the postgres user must reach its own directory inside.
    await chmod(workDir, 0o711);
    await chown(dataDir, ...(await postgresIds()));
  }
  const run = (bin: string, args: string[]): Promise<string> =>
    exec(asRoot ? 'runuser' : join(PG_BIN, bin), asRoot ? ['-u', 'postgres', '--', join(PG_BIN, bin), ...args] : args);
  await run('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const settings = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: dataDir,
    shared_buffers: '64MB',
    max_connections: '100',
    // Test data is thrown away: durability costs only time here (a crash test still gets crash recovery of the WAL).
    fsync: 'off',
    ...options.settings,
  };
  const serverOptions = [`-p ${port!}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(' ');
  let running = false;
  const start = async (): Promise<void> => {
    await run('pg_ctl', ['-D', dataDir, '-o', serverOptions, '-l', join(dataDir, 'server.log'), '-w', '-t', '60', 'start']);
    running = true;
  };
  const stop = async (): Promise<void> => {
    if (!running) return;
    await run('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
    running = false;
  };
  const kill = async (): Promise<void> => {
    const pid = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    // The backends outlive their postmaster for a moment and keep its shared memory: a start before they are gone
    // fails, so they are waited for too.
    const children = (await exec('pgrep', ['-P', String(pid)]).catch(() => '')).split('\n').filter((l) => l.trim() !== '').map(Number);
    process.kill(pid, 'SIGKILL');
    for (const p of [pid, ...children]) await waitGone(p);
    running = false;
  };
  await start();
  return {
    port: port!,
    dataDir,
    url: (database = 'postgres') => `postgres://postgres@127.0.0.1:${port!}/${database}`,
    stop,
    start,
    kill,
    get running() {
      return running;
    },
    destroy: async () => {
      await stop().catch(() => undefined);
      await rm(workDir, { recursive: true, force: true });
    },
  };
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`postmaster ${pid} did not exit after SIGKILL`);
}

/** uid and gid of the postgres user, which initdb and the postmaster run as when this process is root. */
export async function postgresIds(): Promise<[number, number]> {
  const out = await exec('id', ['postgres']);
  const uid = /uid=(\d+)/.exec(out);
  const gid = /gid=(\d+)/.exec(out);
  if (uid === null || gid === null) throw new Error(`no postgres user to run a private PostgreSQL cluster as (id postgres: ${out})`);
  return [Number(uid[1]), Number(gid[1])];
}

/** Runs a command; resolves with its output, rejects with the command line and its output. */
export function exec(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { timeout: 120_000 }, (error, stdout, stderr) => {
      if (error === null) resolve(`${stdout}${stderr}`);
      else reject(new Error(`${command} ${args.join(' ')} failed: ${error.message}\n${stdout}${stderr}`));
    });
  });
}
