import type { z } from 'zod';

/**
 * "Did you mean": the known option closest to a misspelled one. Every object of the configuration schema is strict,
 * so an unknown key is an error; naming the option the user probably meant turns `safetyBuferMinutes` from a silent
 * 240-minute default into a one-line fix.
 */

/** Edit distance (insert, delete, substitute, and swap of two neighbours), case-insensitive. */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  const d: number[][] = Array.from({ length: s.length + 1 }, (_, i) => Array.from({ length: t.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= s.length; i++) {
    for (let j = 1; j <= t.length; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[s.length]![t.length]!;
}

/** The candidate closest to `word`, when it is close enough to be a plausible typo (a third of the length, at least 2). */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  const limit = Math.max(2, Math.floor(word.length / 3));
  let best: { name: string; distance: number } | undefined;
  for (const name of candidates) {
    const distance = editDistance(word, name);
    if (distance <= limit && (best === undefined || distance < best.distance)) best = { name, distance };
  }
  return best?.name;
}

/** The message for an unknown key: its name, the closest known option, or the list of options when few. */
export function unknownKeyMessage(key: string, known: readonly string[]): string {
  const match = closestMatch(key, known);
  if (match !== undefined) return `unknown option ${JSON.stringify(key)}; did you mean ${JSON.stringify(match)}?`;
  return known.length > 0 ? `unknown option ${JSON.stringify(key)}; known options here: ${known.join(', ')}` : `unknown option ${JSON.stringify(key)}`;
}

/** The option names of the object schema found at `path` inside `schema` (through arrays, optionals and defaults). */
export function knownKeysAt(schema: z.core.$ZodType, path: readonly PropertyKey[]): string[] {
  let node: z.core.$ZodType | undefined = unwrap(schema);
  for (const segment of path) {
    if (node === undefined) return [];
    const def = node._zod.def as { type: string; shape?: Record<string, z.core.$ZodType>; element?: z.core.$ZodType };
    if (def.type === 'object' && typeof segment === 'string') node = def.shape?.[segment];
    else if (def.type === 'array' && typeof segment === 'number') node = def.element;
    else return [];
    node = node === undefined ? undefined : unwrap(node);
  }
  const def = node?._zod.def as { type: string; shape?: Record<string, unknown> } | undefined;
  return def?.type === 'object' && def.shape ? Object.keys(def.shape) : [];
}

const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional']);

function unwrap(schema: z.core.$ZodType): z.core.$ZodType {
  let node = schema;
  for (;;) {
    const def = node._zod.def as { type: string; innerType?: z.core.$ZodType; in?: z.core.$ZodType };
    if (WRAPPERS.has(def.type) && def.innerType) node = def.innerType;
    else if (def.type === 'pipe' && def.in) node = def.in;
    else return node;
  }
}
