import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The CLI as a script sees it: a real child process, its exit code and its output.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

async function highwater(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('highwater CLI', () => {
  it('prints help listing every subcommand and the exit codes', async () => {
    const { code, stdout } = await highwater(['--help']);
    expect(code).toBe(0);
    for (const cmd of ['init', 'poll', 'consume', 'run', 'status', 'runs', 'resume', 'reset', 'demo']) expect(stdout).toContain(cmd);
    expect(stdout).toMatch(/Exit codes:[\s\S]*2 +usage or configuration error/);
  });

  it('exits 2 for an unknown command', async () => {
    expect((await highwater(['frobnicate'])).code).toBe(2);
  });

  it('exits 2 and names each bad field for a wrong configuration', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hw-cli-'));
    const file = join(dir, 'bad.yaml');
    await writeFile(file, [
      'controlStore: { database: ctl }',
      'databases:',
      '  - { name: ctl, kind: postgres, connectionString: "postgres://u:topsecret@127.0.0.1/x" }',
      'tables:',
      '  - name: T',
      '    source: nowhere',
      '    batchSize: -1',
      '    blob: { table: B }',
      '    metadata: { table: M, joinColumn: id }',
    ].join('\n'));
    const { code, stderr } = await highwater(['--config', file, 'status']);
    expect(code).toBe(2);
    expect(stderr).toContain('tables.0.source');
    expect(stderr).toContain('tables.0.batchSize');
    expect(stderr).not.toContain('topsecret');
  });

  it('exits 2 when the configuration file is missing', async () => {
    const { code, stderr } = await highwater(['--config', '/nonexistent/highwater.yaml', 'poll']);
    expect(code).toBe(2);
    expect(stderr).toContain('cannot read the file');
  });
});
