import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';

// The operator's first week (issue 10), as a script sees the CLI: a real child process, its exit code, its stdout
// and its stderr. Tests here need no broker or database unless they say so.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;

export async function highwater(args: string[], options: { env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { timeout: 120_000, env: { ...process.env, ...options.env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

async function configFile(label: string, config: Record<string, unknown>): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), `hw-${label}-`)), 'highwater.yaml');
  await writeFile(file, stringify(config));
  return file;
}

const base = {
  controlStore: { database: 'db' },
  databases: [{ name: 'db', kind: 'postgres', connectionString: 'postgres://postgres:topsecret@127.0.0.1:1/none' }],
  tables: [{ name: 'T', source: 'db', blob: { schema: 'demo', table: 'B' }, metadata: { schema: 'demo', table: 'M', joinColumn: 'id' } }],
};

describe('strict configuration (issue 10, item 1)', () => {
  it('rejects a misspelled key by name with a suggestion, exit 2, before connecting anywhere', async () => {
    const file = await configFile('typo', { ...base, tables: [{ ...base.tables[0], safetyBuferMinutes: 5 }] });
    const { code, stdout, stderr } = await highwater(['--config', file, 'init']);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toContain('tables.0.safetyBuferMinutes: unknown option "safetyBuferMinutes"; did you mean "safetyBufferMinutes"?');
  });

  it('rejects an SQL Server connection string on a postgres database at validation, without printing it', async () => {
    const file = await configFile('engine', { ...base, databases: [{ name: 'db', kind: 'postgres', connectionString: 'Server=127.0.0.1,1433;Database=x;User Id=sa;Password=Secret1!;' }] });
    const { code, stderr } = await highwater(['--config', file, 'status']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/databases\.0\.connectionString: looks like an SQL Server connection string, but the database's kind is postgres/);
    expect(stderr).not.toContain('Secret1');
  });
});
