/**
 * The shape every SQL builder returns, per dialect, declared once: builders are pure functions returning
 * `{ text, values }`, and one executor per engine runs them. Values always travel as parameters.
 */

/** PostgreSQL: positional `$n` parameters. */
export interface PgStatement {
  readonly text: string;
  readonly values: readonly unknown[];
}

/** Collects PostgreSQL parameters and hands back their `$n` placeholders. */
export class PgParams {
  readonly values: unknown[] = [];

  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/** SQL Server: named `@name` parameters with their driver type. */
export type SqlServerType = 'NVarChar' | 'VarChar' | 'BigInt' | 'Int' | 'UniqueIdentifier' | 'DateTime2' | 'VarBinary' | 'Bit';

export interface SqlServerParam {
  readonly type: SqlServerType;
  readonly value: unknown;
}

export interface SqlServerStatement {
  readonly text: string;
  readonly values: Readonly<Record<string, SqlServerParam>>;
}
