import { describe, expect, it } from 'vitest';
import { parseConfigObject } from '../../src/config/load.js';
import { columnProblems, type Catalogue } from '../../src/preflight/columns.js';

const config = parseConfigObject({
  controlStore: { database: 'src' },
  databases: [{ name: 'src', kind: 'postgres', connectionString: 'postgres://h/db' }],
  tables: [{
    name: 'T', source: 'src', blob: { schema: 'demo', table: 'Blob' }, metadata: { schema: 'demo', table: 'Meta', joinColumn: 'id' },
    businessUnit: { column: 'OwningBusinessUnit', mapTable: { schema: 'demo', table: 'LA_BU', idColumn: 'BusinessUnitId' } },
  }],
}, 'test');
const table = config.tables[0]!;

const blob = new Map([
  ['stream_id', 'uuid'], ['file_stream', 'bytea'], ['name', 'text'], ['is_directory', 'boolean'], ['path_locator', 'text'],
  ['parent_path_locator', 'text'], ['creation_time', 'timestamp with time zone'], ['last_write_time', 'timestamp with time zone'],
]);
const meta = new Map([['id', 'uuid'], ['ModifiedOn', 'timestamp with time zone'], ['OwningBusinessUnit', 'uuid']]);
const bu = new Map([['BusinessUnitId', 'uuid']]);

describe('preflight: tables and columns', () => {
  it('finds nothing wrong with a complete source', () => {
    const catalogue: Catalogue = new Map([['demo.Blob', blob], ['demo.Meta', meta], ['demo.LA_BU', bu]]);
    expect(columnProblems(table, 'postgres', catalogue, 'src')).toEqual([]);
  });

  it('reports every problem at once: a missing table, a missing column, an unusable type', () => {
    const catalogue: Catalogue = new Map([
      ['demo.Blob', new Map([...blob].filter(([c]) => c !== 'name'))],
      ['demo.Meta', new Map([...meta, ['ModifiedOn', 'text']])],
    ]);
    expect(columnProblems(table, 'postgres', catalogue, 'src')).toEqual([
      'table demo.LA_BU does not exist in database src (or the login cannot see it)',
      'column demo.Blob.name (columns.name) does not exist',
      'column demo.Meta.ModifiedOn (modifiedOnColumn) is text; usable types: timestamp with time zone, timestamp without time zone',
    ]);
  });

  it('compares PostgreSQL names exactly (they are quoted) and SQL Server names without case', () => {
    const lower: Catalogue = new Map([['demo.blob', blob], ['demo.meta', meta], ['demo.la_bu', bu]]);
    expect(columnProblems(table, 'postgres', lower, 'src')).toHaveLength(3);
    const mssql = (m: Map<string, string>, types: Record<string, string>) => new Map([...m].map(([c, t]) => [c.toLowerCase(), types[c] ?? t]));
    const sqlserver: Catalogue = new Map([
      ['demo.blob', mssql(blob, { stream_id: 'uniqueidentifier', file_stream: 'varbinary', name: 'nvarchar', is_directory: 'bit', path_locator: 'hierarchyid', parent_path_locator: 'hierarchyid', creation_time: 'datetimeoffset', last_write_time: 'datetimeoffset' })],
      ['demo.meta', mssql(meta, { id: 'uniqueidentifier', ModifiedOn: 'datetime' })],
      ['demo.la_bu', mssql(bu, {})],
    ]);
    expect(columnProblems(table, 'sqlserver', sqlserver, 'src')).toEqual([]);
  });
});
