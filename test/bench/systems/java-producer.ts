import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureKafkaRuntime } from '../../../src/dev/kafka/kafka.js';

/**
 * What the broker itself takes: Kafka's own Java producer (test/bench/java/ProduceCeiling.java, run by the JDK's
 * source launcher on the broker's own jars, so nothing more is fetched) sending as many records of the same mean
 * size, keyed by random GUIDs, acks=all, batched the way a tuned Java client batches (linger 20 ms, 1 MiB batches,
 * five requests in flight), after an untimed warm-up. B2 produce (plain kafkajs, one 1000-record send at a time) is
 * what highwater's client reaches; this is the broker's ceiling, which B2 is not: on 2026-11-30, 300k records of
 * 200 B went in at 138–150k records/s from Java against 38–45k from kafkajs on the same broker.
 */

const PROGRAM = join(dirname(fileURLToPath(import.meta.url)), '..', 'java', 'ProduceCeiling.java');
/** Warm-up: this many records, or 64 MiB of them if fewer, before the timed part. */
const WARM_UP_RECORDS = 20_000;
const WARM_UP_BYTES = 64 * 1024 * 1024;

export interface JavaProduceResult {
  readonly records: number;
  /** First send to last acknowledgement of the timed records (JVM start-up and warm-up outside). */
  readonly ms: number;
  /** Epoch ms of the first send and of the last acknowledgement (absent from an older program's output). */
  readonly window?: { readonly startMs: number; readonly endMs: number };
}

/** The broker's jars (kafka-clients and what it needs): the program's classpath. */
export async function javaProducerClasspath(): Promise<string> {
  const runtime = await ensureKafkaRuntime();
  return (await readdir(runtime.libDir)).filter((f) => f.endsWith('.jar')).map((f) => join(runtime.libDir, f)).join(':');
}

/** Untimed records sent first: WARM_UP_RECORDS, fewer for large records (at most WARM_UP_BYTES), at least one. Pure. */
export function warmUpRecords(recordBytes: number): number {
  return Math.max(1, Math.min(WARM_UP_RECORDS, Math.floor(WARM_UP_BYTES / Math.max(1, recordBytes))));
}

/** The program's arguments. Pure. */
export function produceCeilingArgs(classpath: string, bootstrap: string, topic: string, records: number, recordBytes: number): string[] {
  const bytes = Math.max(1, Math.round(recordBytes));
  return ['-Xmx768m', '-cp', classpath, PROGRAM, bootstrap, topic, String(records), String(bytes), String(warmUpRecords(bytes))];
}

/** The line the program prints: "sent <n> records of <bytes> bytes in <ms> ms". Pure; throws on anything else. */
export function parseProduceCeiling(output: string): JavaProduceResult {
  const m = /^sent (\d+) records of \d+ bytes in ([\d.]+) ms$/m.exec(output);
  if (m === null) throw new Error(`ProduceCeiling printed no result; its output:\n${output.split('\n').slice(-10).join('\n')}`);
  const records = Number(m[1]);
  const ms = Number(m[2]);
  if (!(records > 0 && ms > 0)) throw new Error(`ProduceCeiling printed an empty result: ${m[0]}`);
  const w = /^window (\d+) (\d+)$/m.exec(output);
  return w === null ? { records, ms } : { records, ms, window: { startMs: Number(w[1]), endMs: Number(w[2]) } };
}

/** Runs the program against `topic` (which must exist) and returns its own measurement. */
export async function runProduceCeiling(classpath: string, bootstrap: string, topic: string, records: number, recordBytes: number): Promise<JavaProduceResult> {
  return parseProduceCeiling(await run('java', produceCeilingArgs(classpath, bootstrap, topic, records, recordBytes), 10 * 60_000));
}

function run(command: string, args: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error === null) resolve(stdout);
      else reject(new Error(`${command} ${PROGRAM} failed: ${error.message}\n${`${stdout}${stderr}`.split('\n').slice(-20).join('\n')}`));
    });
  });
}
