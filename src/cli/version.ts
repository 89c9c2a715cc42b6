import { readFileSync } from 'node:fs';

/** The package version, read when asked (not at import), for `--version` and highwater_build_info. */
export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
