import { describe, expect, it } from 'vitest';
import { downloadReporter, mavenDownloadLine } from '../../src/dev/kafka/maven-progress.js';

// Issue 10, item 9: the first run of the demo (and of `highwater dev kafka`) shows what Maven downloads.
describe("Maven's download progress", () => {
  it('keeps finished downloads, with file, size and rate, and drops the rest of what Maven says', () => {
    expect(mavenDownloadLine('[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/apache/kafka/kafka_2.13/3.9.1/kafka_2.13-3.9.1.jar (6.5 MB at 2.1 MB/s)'))
      .toBe('downloaded kafka_2.13-3.9.1.jar (6.5 MB at 2.1 MB/s) from central');
    expect(mavenDownloadLine('Downloaded from mirror: https://m.example/x/y.pom')).toBe('downloaded y.pom from mirror');
    expect(mavenDownloadLine('[INFO] Downloading from central: https://repo.maven.apache.org/maven2/a/b.jar')).toBeNull();
    expect(mavenDownloadLine('[INFO] BUILD SUCCESS')).toBeNull();
  });

  it('numbers the downloads across chunks that split lines anywhere', () => {
    const lines: string[] = [];
    const reporter = downloadReporter((l) => lines.push(l));
    reporter.write(Buffer.from('[INFO] Downloaded from central: https://r/a.jar (1 kB at 2 kB/s)\n[INFO] Downl'));
    reporter.write(Buffer.from('oaded from central: https://r/b.pom (3 kB at 4 kB/s)'));
    reporter.end();
    expect(lines).toEqual(['  [1] downloaded a.jar (1 kB at 2 kB/s) from central', '  [2] downloaded b.pom (3 kB at 4 kB/s) from central']);
  });
});
