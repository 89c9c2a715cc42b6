/**
 * Identifiers from configuration (schemas, tables, columns) are validated here once and quoted per dialect.
 * Values never pass through this module: they go in parameters.
 */

/** Letters, digits, `_`, `$` and `#`, starting with a letter or `_`; at most 128 characters (SQL Server's limit). */
export const IDENTIFIER_PATTERN = /^[A-Za-z_][A-Za-z0-9_$#]{0,127}$/;

export function isValidIdentifier(name: string): boolean {
  return IDENTIFIER_PATTERN.test(name);
}

export function assertIdentifier(name: string, what = 'identifier'): string {
  if (!isValidIdentifier(name)) {
    throw new TypeError(`invalid ${what} ${JSON.stringify(name)}: use letters, digits, _, $ or #, starting with a letter or _`);
  }
  return name;
}

/** PostgreSQL: `"name"`; the identifier is validated first, so no embedded quote can occur. */
export function quotePg(name: string): string {
  return `"${assertIdentifier(name)}"`;
}

/** SQL Server: `[name]`. */
export function quoteMssql(name: string): string {
  return `[${assertIdentifier(name)}]`;
}

/** A schema-qualified name in either dialect. */
export function qualified(quote: (n: string) => string, schema: string, table: string): string {
  return `${quote(schema)}.${quote(table)}`;
}
