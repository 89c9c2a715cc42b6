import { ConfigError, HighwaterError } from '../errors.js';

/** Exit codes scripts can rely on (documented in docs/operations.md and `highwater --help`). */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  DIFFERENCE: 3,
} as const;

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return EXIT.USAGE;
  if (err instanceof HighwaterError) return err.exitCode;
  if (err instanceof Error && err.name === 'CommanderError') return EXIT.USAGE;
  return EXIT.FAILURE;
}
