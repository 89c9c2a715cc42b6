import { loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createLogger, type Logger } from '../logger.js';
import { jsonDocument } from './json-output.js';

/** What every command needs: the loaded configuration and a logger. Settings: file < environment < flags. */

export interface GlobalOptions {
  config?: string;
  logLevel?: string;
  json?: boolean;
}

export function configPath(options: GlobalOptions, env = process.env): string {
  return options.config ?? env.HIGHWATER_CONFIG ?? 'highwater.yaml';
}

export function loggerFor(options: GlobalOptions, config?: Config): Logger {
  const level = options.logLevel ?? process.env.HIGHWATER_LOG_LEVEL ?? config?.log.level ?? 'info';
  // Logs go to stderr on every command, so stdout holds only the command's output (one JSON document with --json).
  return createLogger({ level, pretty: process.stderr.isTTY === true && !options.json });
}

export async function loadContext(options: GlobalOptions): Promise<{ config: Config; logger: Logger }> {
  const config = await loadConfigFile(configPath(options));
  return { config, logger: loggerFor(options, config) };
}

/** Prints a report: one JSON document when asked for (times as ISO 8601 with 7 digits), else the human rendering. */
export function report(options: GlobalOptions, value: unknown, human: () => string): void {
  if (options.json) process.stdout.write(`${jsonDocument(value)}\n`);
  else process.stdout.write(`${human()}\n`);
}
