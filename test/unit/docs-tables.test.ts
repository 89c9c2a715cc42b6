import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseConfigObject } from '../../src/config/load.js';
import { ACCEPTED_TYPES, requirements, type Engine } from '../../src/preflight/columns.js';
import { sqlTableName } from '../../src/apply/sink/batch.js';

// docs/tables.md must stay true (issue 10, item 10): its type table is the preflight's, its naming examples are the
// sink's. The PostgreSQL stand-in DDL is run for real in test/integration/docs-tables.test.ts.
const doc = readFileSync(new URL('../../docs/tables.md', import.meta.url), 'utf8');

/** role key in the doc's table → the configuration key the preflight names in its messages. */
function documentedTypes(): Map<string, { postgres: string[]; sqlserver: string[] }> {
  const section = doc.slice(doc.indexOf('## Column roles'), doc.indexOf('Notes:'));
  const rows = section.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| role') && !l.startsWith('| ---'));
  const list = (cell: string) => (cell.trim().startsWith('any') ? [] : cell.split(',').map((x) => x.trim()));
  return new Map(rows.map((row) => {
    const cells = row.split('|').slice(1, -1);
    const key = /`([^`]+)`/.exec(cells[1]!)![1]!;
    return [key, { postgres: list(cells[3]!), sqlserver: list(cells[4]!) }];
  }));
}

describe('docs/tables.md', () => {
  const table = parseConfigObject({
    databases: [{ name: 's', kind: 'postgres' }],
    controlStore: { database: 's' },
    tables: [{ name: 'T', source: 's', blob: { table: 'b' }, metadata: { table: 'm', joinColumn: 'id' }, businessUnit: { column: 'bu', mapTable: { table: 'bu', idColumn: 'id' } } }],
  }, 'test').tables[0]!;

  it.each(['postgres', 'sqlserver'] as Engine[])('lists, for %s, exactly the types the preflight accepts for every column role', (engine) => {
    const documented = documentedTypes();
    for (const r of requirements(table, engine)) {
      expect(documented.get(r.role)?.[engine], `${engine} ${r.role}`).toEqual([...r.types]);
    }
    expect(documented.size).toBe(requirements(table, engine).length);
    expect(Object.keys(ACCEPTED_TYPES[engine]).length).toBeGreaterThan(0);
  });

  it('names target tables as the sink does', () => {
    expect(doc).toContain('`ReferralAttachment` becomes `referralattachment`');
    expect(sqlTableName('ReferralAttachment', 54)).toBe('referralattachment');
    expect(doc).toContain('`2024-Docs` becomes\n`t_2024_docs`');
    expect(sqlTableName('2024-Docs', 54)).toBe('t_2024_docs');
  });
});
