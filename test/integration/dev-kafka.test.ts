import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { kafkaSchema } from '../../src/config/schema.js';
import { createIdempotentProducer, createKafka } from '../../src/kafka/client.js';
import { createLogger } from '../../src/logger.js';

// Issue 10, item 7: `highwater dev kafka` as a user without Docker runs it — a real child process, the bootstrap line
// on stdout, a client of the project's Kafka wrapper that creates a topic and produces to it, then Ctrl-C (SIGINT)
// and a clean exit 0 with the broker gone.
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

describe('highwater dev kafka (issue 10, item 7)', () => {
  it('prints the bootstrap address, serves clients, and stops cleanly on SIGINT', async () => {
    const child = spawn(process.execPath, [BIN, 'dev', 'kafka', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      const bootstrap = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const match = /^bootstrap (127\.0\.0\.1:\d+)$/m.exec(stdout);
          if (match) resolve(match[1]!);
        });
        void exited.then((code) => reject(new Error(`exited ${code} before printing the bootstrap address:\n${stderr}`)));
      });

      const kafka = createKafka(kafkaSchema.parse({ brokers: [bootstrap], clientId: 'hw-dev-kafka-test' }), createLogger({ level: 'silent' }));
      const admin = kafka.admin();
      await admin.connect();
      const producer = createIdempotentProducer(kafka);
      try {
        expect(await admin.createTopics({ topics: [{ topic: 'hw-dev-kafka-test', numPartitions: 1 }], waitForLeaders: true })).toBe(true);
        await producer.connect();
        const [sent] = await producer.send({ topic: 'hw-dev-kafka-test', messages: [{ key: 'k', value: 'v' }] });
        expect(sent!.errorCode).toBe(0);
      } finally {
        await producer.disconnect();
        await admin.disconnect();
      }

      child.kill('SIGINT');
      expect(await exited).toBe(0);
      expect(stderr).toContain(`HIGHWATER_KAFKA_BROKERS=${bootstrap}`);
      expect(stderr).toContain('stopping Kafka (send the signal again to exit at once)');
    } finally {
      // SIGINT first even on failure: the broker JVM runs in its own process group and is stopped by the command.
      if (child.exitCode === null) child.kill('SIGINT');
    }
  });

  it('a port in use is one usage line at once (exit 2), before any JVM starts', async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const failed = await promisify(execFile)(process.execPath, [BIN, 'dev', 'kafka', '--port', String(port)], { timeout: 60_000 }).then(() => null, (e: { code: number; stdout: string; stderr: string }) => e);
      expect(failed?.code).toBe(2);
      expect(failed?.stdout).toBe('');
      expect(failed?.stderr).toContain(`port ${port} on 127.0.0.1 is in use (another Kafka?)`);
    } finally {
      busy.close();
    }
  });

  it('with --registry also prints a schema registry URL that answers, and stops both on SIGINT', async () => {
    const child = spawn(process.execPath, [BIN, 'dev', 'kafka', '--port', '0', '--registry'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      // The first run downloads the registry's distribution with Maven (its lines go to stderr).
      const registry = await new Promise<string>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => {
          stdout += d.toString();
          const match = /^schema registry (http:\/\/127\.0\.0\.1:\d+\S*)$/m.exec(stdout);
          if (match) resolve(match[1]!);
        });
        void exited.then((code) => reject(new Error(`exited ${code} before printing the registry URL:\n${stderr}`)));
      });
      expect(stdout).toMatch(/^bootstrap 127\.0\.0\.1:\d+$/m);
      const answer = await fetch(`${registry}/subjects`);
      expect(answer.status).toBe(200);
      expect(await answer.json()).toEqual([]);
      child.kill('SIGINT');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGINT');
    }
  }, 600_000);
});
