import { readFile, writeFile } from 'node:fs/promises';

/**
 * The command line of a generated file (docs/configuration.md, docs/metrics.md, the config JSON Schema):
 * `--write [file]` writes it, `--check [file]` exits 1 when the committed file is stale, no argument prints it.
 */
export interface GeneratedFile {
  readonly render: () => string;
  readonly file: string;
  /** The command that regenerates it, named when the committed file is stale. */
  readonly command: string;
}

export async function generatedFileCli(args: readonly string[], generated: GeneratedFile): Promise<number> {
  const [mode, file = generated.file] = args;
  const text = generated.render();
  if (mode === '--write') {
    await writeFile(file, text);
    return 0;
  }
  if (mode === '--check') {
    const current = await readFile(file, 'utf8').catch(() => '');
    if (current === text) return 0;
    process.stderr.write(`${file} is stale: run ${generated.command}\n`);
    return 1;
  }
  process.stdout.write(text);
  return 0;
}
