import { InvalidArgumentError } from 'commander';

/** Option parsers: a bad number is a usage error (exit 2) naming the option, not a SQL error later. */

export function positiveInt(text: string): number {
  const n = integer(text);
  if (n < 1) throw new InvalidArgumentError('must be a whole number of at least 1.');
  return n;
}

export function portNumber(text: string): number {
  const n = integer(text);
  if (n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number from 0 to 65535 (0: any free port).');
  return n;
}

function integer(text: string): number {
  if (!/^\s*-?\d+\s*$/.test(text) || !Number.isSafeInteger(Number(text))) throw new InvalidArgumentError('must be a whole number.');
  return Number(text);
}
