import { chmod, chown, mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { freePorts } from '../../../src/dev/kafka/ports.js';
import { exec, postgresIds } from '../../support/pg-cluster.js';

/**
 * A private PostgreSQL 15 cluster with wal_level=logical for B4's Debezium source, on a free port, in the run's
 * work directory: initdb + pg_ctl, never the machine's shared server. When the bench runs as root, the cluster
 * runs as the `postgres` user (PostgreSQL refuses root).
 */

export const PG_BIN = process.env.HIGHWATER_BENCH_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface LogicalCluster {
  readonly port: number;
  readonly url: (database: string) => string;
  stop(): Promise<void>;
}

export async function startLogicalCluster(workDir: string): Promise<LogicalCluster> {
  const dataDir = join(workDir, 'pg-logical');
  const [port] = await freePorts(1);
  await mkdir(dataDir, { recursive: true });
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    // mkdtemp's directory is private to root; the postgres user must be able to reach its own directory inside.
    await chmod(workDir, 0o711);
    await chown(dataDir, ...(await postgresIds()));
  }
  const run = (bin: string, args: string[]) => exec(asRoot ? 'runuser' : join(PG_BIN, bin), asRoot ? ['-u', 'postgres', '--', join(PG_BIN, bin), ...args] : args);
  await run('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const settings = [`-p ${port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories=${dataDir}`, '-c wal_level=logical',
    '-c max_replication_slots=20', '-c max_wal_senders=20', '-c shared_buffers=128MB'].join(' ');
  await run('pg_ctl', ['-D', dataDir, '-o', settings, '-l', join(dataDir, 'server.log'), '-w', 'start']);
  return {
    port: port!,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    stop: async () => {
      await run('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
    },
  };
}

