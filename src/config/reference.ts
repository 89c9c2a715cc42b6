import { generatedFileCli } from '../generated-file.js';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { configSchema } from './schema.js';

/**
 * Renders docs/configuration.md from the zod schema's descriptions and defaults, so the reference cannot drift
 * from the code: `npm run docs:config` rewrites it and a unit test fails when it is stale.
 */

interface JsonSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  enum?: unknown[];
  anyOf?: JsonSchema[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
}

const HEADER = `# Configuration reference

Generated from \`src/config/schema.ts\` by \`npm run docs:config\`; do not edit by hand (a unit test checks it is current).

highwater reads one YAML file (\`--config\`, \`HIGHWATER_CONFIG\`, default \`./highwater.yaml\`). Environment variables
override connection strings and secrets: \`HIGHWATER_KAFKA_BROKERS\`, \`HIGHWATER_KAFKA_USERNAME\`,
\`HIGHWATER_KAFKA_PASSWORD\`, \`HIGHWATER_SCHEMA_REGISTRY_URL\`, \`HIGHWATER_DB_<NAME>_URL\` (database name upper-cased,
other characters as \`_\`), \`HIGHWATER_LOG_LEVEL\`. Command-line flags come last. A configuration that fails validation
prints the path of each bad field and exits with code 2. Every section is strict: an unknown or misspelled option is an
error that names it (with the closest known option), never a silent default. A connection string whose shape belongs to
the other engine is rejected at validation.

Editors can check the file while it is written: \`schema/highwater-config.schema.json\` is generated from the same schema
(JSON Schema 2020-12). With the YAML language server (VS Code's YAML extension), put this line at the top of the file:
\`# yaml-language-server: $schema=<path to>/schema/highwater-config.schema.json\`.

| option | type | default | description |
| --- | --- | --- | --- |
`;

export function renderReference(): string {
  const root = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const rows: string[] = [];
  walk(root, '', rows);
  return `${HEADER}${rows.join('\n')}\n`;
}

function walk(node: JsonSchema, path: string, rows: string[]): void {
  const target = unwrap(node);
  if (path) rows.push(row(path, node, target));
  if (target.properties) {
    for (const [name, child] of Object.entries(target.properties)) walk(child, path ? `${path}.${name}` : name, rows);
  } else if (target.type === 'array' && target.items && unwrap(target.items).properties) {
    walk(target.items, `${path}[]`, rows);
  }
}

function unwrap(node: JsonSchema): JsonSchema {
  const nonNull = node.anyOf?.filter((s) => s.type !== 'null');
  return nonNull && nonNull.length === 1 ? { ...nonNull[0], description: node.description ?? nonNull[0]!.description } : node;
}

function row(path: string, node: JsonSchema, target: JsonSchema): string {
  const nullable = node.anyOf?.some((s) => s.type === 'null') ? ' or null' : '';
  const type = target.enum ? target.enum.map((v) => `\`${String(v)}\``).join(' \\| ') : `${typeName(target)}${nullable}`;
  const fallback = node.default ?? target.default;
  const def = fallback === undefined ? '' : `\`${JSON.stringify(fallback)}\``;
  const description = (node.description ?? target.description ?? '').replace(/\|/g, '\\|');
  return `| \`${path}\` | ${type} | ${def.length > 60 ? '(see below)' : def} | ${description} |`;
}

function typeName(s: JsonSchema): string {
  if (Array.isArray(s.type)) return s.type.join(' or ');
  if (s.type === 'array') return `list of ${s.items ? typeName(unwrap(s.items)) : 'values'}`;
  return s.type ?? 'value';
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await generatedFileCli(process.argv.slice(2), { render: renderReference, file: 'docs/configuration.md', command: 'npm run docs:config' });
}
