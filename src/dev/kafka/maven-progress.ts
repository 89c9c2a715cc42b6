/**
 * Maven's own download log, turned into progress a person can follow on the first run (Kafka's jars, the schema
 * registry's distribution: minutes on a slow link, silence otherwise). Maven runs without `-q` when someone watches;
 * its batch-mode transfer lines are kept, everything else it says is dropped.
 */

// "[INFO] Downloaded from central: https://…/kafka_2.13-3.9.1.jar (6.5 MB at 2.1 MB/s)" (the [INFO] prefix and the
// repository name vary with Maven's version and settings).
const DOWNLOADED = /Downloaded from ([^:]+): (\S+?)(?: \(([^)]*)\))?\s*$/;

/** The progress line for one line of Maven output, or null when it is not a finished download. Pure. */
export function mavenDownloadLine(line: string): string | null {
  const match = DOWNLOADED.exec(line.trim());
  if (match === null) return null;
  const file = match[2]!.slice(match[2]!.lastIndexOf('/') + 1);
  return `downloaded ${file}${match[3] ? ` (${match[3]})` : ''} from ${match[1]}`;
}

/** Splits a stream of chunks into lines and passes each download on; what is left at the end is flushed by `end`. */
export function downloadReporter(report: (line: string) => void): { write(chunk: Buffer): void; end(): void } {
  let pending = '';
  let count = 0;
  const take = (line: string) => {
    const progress = mavenDownloadLine(line);
    if (progress !== null) report(`  [${++count}] ${progress}`);
  };
  return {
    write: (chunk) => {
      const lines = (pending + chunk.toString('utf8')).split('\n');
      pending = lines.pop() ?? '';
      lines.forEach(take);
    },
    end: () => {
      if (pending !== '') take(pending);
      pending = '';
    },
  };
}
