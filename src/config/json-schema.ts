import { generatedFileCli } from '../generated-file.js';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { configSchema } from './schema.js';

/**
 * Renders schema/highwater-config.schema.json from the zod schema, so editors (the YAML language server, IntelliJ)
 * check highwater.yaml while it is written: unknown keys, types, enums and descriptions. `npm run docs:config`
 * rewrites it with docs/configuration.md, and a unit test fails when it is stale.
 */

export const JSON_SCHEMA_FILE = 'schema/highwater-config.schema.json';

export function renderJsonSchema(): string {
  // io 'input': the file is what a person writes, so options with defaults are optional.
  const generated = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  const { $schema, ...rest } = generated;
  const document = {
    $schema,
    title: 'highwater configuration',
    description: 'highwater.yaml. Generated from src/config/schema.ts by `npm run docs:config`; do not edit by hand.',
    ...rest,
  };
  return `${JSON.stringify(document, null, 2)}\n`;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.exitCode = await generatedFileCli(process.argv.slice(2), { render: renderJsonSchema, file: JSON_SCHEMA_FILE, command: 'npm run docs:config' });
}
