/**
 * Regression (found by the fault matrix, R5): when the apply loop met an error it cannot retry, kafkajs stopped the
 * consumer for good while `highwater consume` lived on, consuming nothing: lag grew and no one was told. The
 * running consumers now report it (`failed`), and `consume` exits 1 so a supervisor restarts it.
 *
 * Regression (issue 9): `highwater run` (poller and consumers in one process) kept polling after its consumer had
 * stopped for good: a process that looks alive while its target no longer moves. It now exits 1 with a plain line.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { pipeline, type Pipeline } from '../support/pipeline.js';

const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

/** `highwater <args>` in a child process; resolves with its exit code and output once it exits. */
function highwater(args: string[]): { exit: Promise<{ code: number | null; output: string }>; kill(): void } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HIGHWATER_LOG_LEVEL: 'info' } });
  let output = '';
  child.stdout.on('data', (d) => (output += String(d)));
  child.stderr.on('data', (d) => (output += String(d)));
  return { exit: new Promise((resolve) => child.on('exit', (code) => resolve({ code, output }))), kill: () => child.kill('SIGKILL') };
}

/** Waits (at most 90 s) until `key` is in the target; otherwise stops the process and fails with its output. */
async function arrived(p: Pipeline, key: string | undefined, child: ReturnType<typeof highwater>): Promise<void> {
  for (let i = 0; i < 450; i++) {
    const { rowCount } = await p.tgt.query(`SELECT 1 FROM ${p.targetTable} WHERE key = $1`, [key]).catch(() => ({ rowCount: 0 }));
    if (rowCount === 1) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill();
  const { output } = await child.exit;
  throw new Error(`row ${key} did not reach the target:\n${output.slice(-5000)}`);
}

describe('a consumer stopped for good', () => {
  it('is reported when the apply fails with an error that cannot be retried', async () => {
    const p = await pipeline('consumer failure');
    await p.insert([{ path: '/1/' }]);
    await p.poll();
    const running = await p.consume();
    await p.drain();
    // The target table gone: every apply fails with 42P01 (undefined table), a query error, never retried.
    await p.tgt.query(`DROP TABLE ${p.targetTable}`);
    await p.insert([{ path: '/2/' }]);
    await p.poll();
    const failure = await Promise.race([running.failed, new Promise<undefined>((r) => setTimeout(() => r(undefined), 90_000))]);
    expect(failure?.message).toMatch(/does not exist/);
  });

  it('ends `highwater run` with exit code 1 and a line naming the group and the cause', async () => {
    const p = await pipeline('run exits');
    const file = join(await mkdtemp(join(tmpdir(), 'hw-run-exit-')), 'highwater.yaml');
    // Polls every second, so the row written after the table is dropped is published soon (the default is 300 s).
    await writeFile(file, JSON.stringify({ ...p.raw, poll: { ...(p.raw.poll as Record<string, unknown>), intervalSeconds: 1 } }));
    const [first] = await p.insert([{ path: '/1/' }]);
    const run = highwater(['--config', file, 'init']);
    expect((await run.exit).code).toBe(0);
    const running = highwater(['--config', file, 'run']);
    try {
      // The first row in the target: `run` polls, publishes and applies (drain alone returns on a still empty topic).
      await arrived(p, first, running);
      await p.tgt.query(`DROP TABLE ${p.targetTable}`);
      // The poller of `run` publishes it; its consumer cannot apply it and stops for good.
      await p.insert([{ path: '/2/' }]);
      // Bounded, so a run that does not exit fails with its output instead of the test's timeout.
      const timeout = setTimeout(() => running.kill(), 120_000);
      const { code, output } = await running.exit;
      clearTimeout(timeout);
      expect(code, output).toBe(1);
      expect(output).toMatch(new RegExp(`highwater: the consumer of group ${p.target.groupId} stopped on an error it cannot retry: .*does not exist`));
    } finally {
      running.kill();
    }
  });
});
