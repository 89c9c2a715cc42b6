import { open, rm } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { MachineFingerprint } from '../model.js';

/** What the machine was like during the run: cores, load, a quick fsync rate, versions. */

const FSYNC_BUDGET_MS = 1000;
const FSYNC_MAX_OPS = 2000;

/** Writes 4 KiB and fdatasyncs it, again and again, for about a second, in `dir` (on the disk the databases use). */
export async function fsyncRate(dir: string): Promise<number> {
  const file = join(dir, `fsync-probe-${process.pid}`);
  const handle = await open(file, 'w');
  const block = Buffer.alloc(4096, 7);
  const started = performance.now();
  let ops = 0;
  try {
    while (ops < FSYNC_MAX_OPS && performance.now() - started < FSYNC_BUDGET_MS) {
      await handle.write(block, 0, block.length, 0);
      await handle.datasync();
      ops++;
    }
  } finally {
    await handle.close();
    await rm(file, { force: true });
  }
  return (ops * 1000) / (performance.now() - started);
}

export function load(): [number, number, number] {
  const [a, b, c] = loadavg();
  return [a ?? 0, b ?? 0, c ?? 0];
}

export async function fingerprint(dir: string, admin: pg.Pool, kafkaVersion: string): Promise<MachineFingerprint> {
  const loadAverage = load();
  const { rows } = await admin.query<{ version: string }>('SELECT version()');
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: totalmem() / 2 ** 30,
    loadAverage,
    fsyncPerSecond: await fsyncRate(dir),
    node: process.version,
    postgres: (rows[0]?.version ?? 'unknown').split(',')[0]!,
    kafka: kafkaVersion,
  };
}
