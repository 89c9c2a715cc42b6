/**
 * The partition of a keyed record as Kafka's Java client (and kafkajs' DefaultPartitioner) choose it: murmur2 of
 * the key's UTF-8 bytes, made positive, modulo the partition count. The same function in 32-bit integer arithmetic
 * (Math.imul) rather than kafkajs' 64-bit Long objects: the poller partitions every record itself, so that this is
 * a few hundred nanoseconds per record, not microseconds, and a row's chunks and its change use one partition count.
 * Pure.
 */

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/** Java's `Utils.murmur2(byte[])`, as a signed 32-bit integer. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = SEED ^ length;
  const whole = length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  // The trailing one to three bytes (Java's switch falls through from case 3 to case 1).
  const tail = length & 3;
  if (tail > 0) {
    if (tail === 3) h ^= data[whole + 2]! << 16;
    if (tail >= 2) h ^= data[whole + 1]! << 8;
    h ^= data[whole]!;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/** The UTF-8 bytes of a key; ASCII keys (GUIDs, paths) without going through a Buffer. */
function utf8(key: string): Uint8Array {
  const n = key.length;
  const bytes = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const c = key.charCodeAt(i);
    if (c >= 0x80) return Buffer.from(key, 'utf8');
    bytes[i] = c;
  }
  return bytes;
}

/** The partition Kafka's default partitioner gives `key` among `partitionCount` partitions. */
export function partitionForKey(key: string, partitionCount: number): number {
  return (murmur2(utf8(key)) & 0x7fffffff) % partitionCount;
}
