import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { brokers } from '../support/kafka.js';
import { createTestDatabase, dropWhenPassed } from '../support/pg.js';

// docs/tables.md's PostgreSQL stand-in (issue 10, item 10): its DDL, run on a fresh database, and its configuration
// pass `highwater check` — the preflight that checks every table, column and type — as documented.
const run = promisify(execFile);
const BIN = new URL('../../src/cli/bin.js', import.meta.url).pathname;
const doc = readFileSync(new URL('../../docs/tables.md', import.meta.url), 'utf8');

function block(info: string): string {
  const start = doc.indexOf(`\`\`\`${info}\n`);
  expect(start, `a \`\`\`${info} block in docs/tables.md`).toBeGreaterThan(-1);
  const body = start + info.length + 4;
  return doc.slice(body, doc.indexOf('```', body));
}

describe('docs/tables.md', () => {
  it('the PostgreSQL stand-in DDL and its configuration pass `highwater check`', async () => {
    const db = await createTestDatabase('docs tables');
    dropWhenPassed(db);
    await db.pool().query(block('sql postgres-stand-in'));
    const documented = parse(block('yaml postgres-stand-in')) as { tables: unknown[] };
    const file = join(await mkdtemp(join(tmpdir(), 'hw-docs-tables-')), 'highwater.yaml');
    await writeFile(file, stringify({
      controlStore: { database: 'src' },
      kafka: { brokers: brokers() },
      databases: [{ name: 'src', kind: 'postgres', connectionString: db.url }],
      tables: documented.tables,
      log: { level: 'error' },
    }));
    const { stdout } = await run(process.execPath, [BIN, '--config', file, 'check'], { timeout: 120_000 }).catch((e: { stdout: string; stderr: string }) => ({ stdout: `${e.stdout}\n${e.stderr}` }));
    expect(stdout).toMatch(/ok +table ReferralAttachment/);
    expect(stdout).not.toMatch(/FAIL +table/);
  });
});
