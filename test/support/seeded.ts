/**
 * mulberry32: a small, fast, seedable 32-bit generator, so every generated test input replays from its seed. Good
 * enough to shape data, not for cryptography. (test/integration/consumer.test.ts and test/faults/harness.ts keep an
 * older variant of their own: their recorded seeds replay with it.)
 */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
