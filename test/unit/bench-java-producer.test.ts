import { describe, expect, it } from 'vitest';
import { parseProduceCeiling, produceCeilingArgs, warmUpRecords } from '../bench/systems/java-producer.js';

describe("B2's Java producer (ProduceCeiling.java)", () => {
  it('reads the line it prints among whatever else the JVM printed', () => {
    const r = parseProduceCeiling('SLF4J: a warning\nsent 100000 records of 412 bytes in 714.250 ms\n');
    expect(r).toEqual({ records: 100000, ms: 714.25 });
  });

  it('reads the wall-clock window of the timed sends when the program prints it', () => {
    const r = parseProduceCeiling('sent 10 records of 412 bytes in 5.000 ms\nwindow 1796050000000 1796050000005\n');
    expect(r).toEqual({ records: 10, ms: 5, window: { startMs: 1796050000000, endMs: 1796050000005 } });
  });

  it('throws with the output when there is no result line or it is empty', () => {
    expect(() => parseProduceCeiling('Exception in thread "main" org.apache.kafka.common.errors.TimeoutException')).toThrow(/no result.*TimeoutException/s);
    expect(() => parseProduceCeiling('sent 0 records of 412 bytes in 0.000 ms')).toThrow(/empty result/);
  });

  it('warms up on 20,000 records, or 64 MiB of large ones, and at least one', () => {
    expect(warmUpRecords(200)).toBe(20_000);
    expect(warmUpRecords(1024 * 1024 + 300)).toBe(63);
    expect(warmUpRecords(512 * 1024 * 1024)).toBe(1);
  });

  it('runs the program from the source launcher with the records, their rounded mean size and the warm-up', () => {
    const args = produceCeilingArgs('/lib/a.jar:/lib/b.jar', '127.0.0.1:9092', 't', 20000, 412.6);
    expect(args.slice(0, 3)).toEqual(['-Xmx768m', '-cp', '/lib/a.jar:/lib/b.jar']);
    expect(args[3]).toMatch(/test\/bench\/java\/ProduceCeiling\.java$/);
    expect(args.slice(4)).toEqual(['127.0.0.1:9092', 't', '20000', '413', '20000']);
  });
});
