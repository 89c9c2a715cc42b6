import type { TableConfig } from '../config/schema.js';

/**
 * What a configured table needs from its source database: which tables and columns must exist, and which column
 * types the source connector can read for each role. Pure: the preflight fetches the catalogue and asks
 * {@link columnProblems} what is wrong with it, so every problem is reported at once.
 */

export type Engine = 'postgres' | 'sqlserver';

export interface TableRef {
  readonly schema: string;
  readonly table: string;
}

/**
 * Columns of each table as the catalogue lists them: {@link tableKey} → {@link nameKey} of the column → data type
 * (lower-cased). PostgreSQL names are compared exactly (highwater quotes them); SQL Server's usually are not
 * case-sensitive, so they are compared lower-cased.
 */
export type Catalogue = ReadonlyMap<string, ReadonlyMap<string, string>>;

interface Requirement {
  readonly where: 'blob' | 'metadata' | 'business-unit map';
  readonly ref: TableRef;
  readonly column: string;
  readonly role: string;
  /** Usable data types, lower-case as information_schema spells them; empty: any type. */
  readonly types: readonly string[];
}

const PG_TIME = ['timestamp with time zone', 'timestamp without time zone'];
const MSSQL_TIME = ['datetime2', 'datetime', 'datetimeoffset', 'smalldatetime'];
/** The data types the source connectors read, per engine and column role (docs/tables.md lists them). */
export const ACCEPTED_TYPES: Record<Engine, Record<'key' | 'content' | 'text' | 'flag' | 'hierarchy' | 'time', readonly string[]>> = {
  postgres: {
    key: ['uuid', 'text', 'character varying'],
    content: ['bytea'],
    text: ['text', 'character varying'],
    flag: ['boolean'],
    hierarchy: ['text', 'character varying'],
    time: PG_TIME,
  },
  sqlserver: {
    key: ['uniqueidentifier', 'nvarchar', 'varchar', 'nchar', 'char'],
    content: ['varbinary', 'image'],
    text: ['nvarchar', 'varchar', 'nchar', 'char'],
    flag: ['bit'],
    hierarchy: ['hierarchyid'],
    time: MSSQL_TIME,
  },
};

export function nameKey(engine: Engine, name: string): string {
  return engine === 'sqlserver' ? name.toLowerCase() : name;
}

export function tableKey(engine: Engine, ref: TableRef): string {
  return `${nameKey(engine, ref.schema)}.${nameKey(engine, ref.table)}`;
}

export function tablesOf(table: TableConfig): TableRef[] {
  const refs: TableRef[] = [table.blob, table.metadata];
  if (table.businessUnit?.mapTable) refs.push(table.businessUnit.mapTable);
  return refs;
}

export function requirements(table: TableConfig, engine: Engine): Requirement[] {
  const t = ACCEPTED_TYPES[engine];
  const c = table.columns;
  const blob = (column: string, role: string, types: readonly string[]): Requirement => ({ where: 'blob', ref: table.blob, column, role, types });
  const meta = (column: string, role: string, types: readonly string[]): Requirement => ({ where: 'metadata', ref: table.metadata, column, role, types });
  const list: Requirement[] = [
    blob(table.keyColumn, 'keyColumn', t.key),
    blob(c.content, 'columns.content', t.content),
    blob(c.name, 'columns.name', t.text),
    blob(c.isDirectory, 'columns.isDirectory', t.flag),
    blob(c.pathLocator, 'columns.pathLocator', t.hierarchy),
    blob(c.parentPathLocator, 'columns.parentPathLocator', t.hierarchy),
    meta(table.metadata.joinColumn, 'metadata.joinColumn', t.key),
    meta(table.modifiedOnColumn, 'modifiedOnColumn', t.time),
  ];
  if (c.creationTime !== null) list.push(blob(c.creationTime, 'columns.creationTime', t.time));
  if (c.lastWriteTime !== null) list.push(blob(c.lastWriteTime, 'columns.lastWriteTime', t.time));
  const bu = table.businessUnit;
  if (bu) {
    list.push(meta(bu.column, 'businessUnit.column', []));
    if (bu.mapTable) list.push({ where: 'business-unit map', ref: bu.mapTable, column: bu.mapTable.idColumn, role: 'businessUnit.mapTable.idColumn', types: [] });
  }
  return list;
}

/** Every problem of one table against the catalogue of its source: missing tables, missing columns, unusable types. */
export function columnProblems(table: TableConfig, engine: Engine, catalogue: Catalogue, database: string): string[] {
  const problems: string[] = [];
  const missingTables = new Set<string>();
  for (const ref of tablesOf(table)) {
    const key = tableKey(engine, ref);
    if (!catalogue.has(key) && !missingTables.has(key)) {
      missingTables.add(key);
      problems.push(`table ${ref.schema}.${ref.table} does not exist in database ${database} (or the login cannot see it)`);
    }
  }
  for (const r of requirements(table, engine)) {
    const columns = catalogue.get(tableKey(engine, r.ref));
    if (!columns) continue;
    const type = columns.get(nameKey(engine, r.column));
    if (type === undefined) problems.push(`column ${r.ref.schema}.${r.ref.table}.${r.column} (${r.role}) does not exist`);
    else if (r.types.length > 0 && !r.types.includes(type)) problems.push(`column ${r.ref.schema}.${r.ref.table}.${r.column} (${r.role}) is ${type}; usable types: ${r.types.join(', ')}`);
  }
  return problems;
}
