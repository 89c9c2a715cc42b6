/** Depth of a hierarchy string such as `/1/2/3/` (3): parents sort before their children. Both sides order by it. */
export function hierarchyDepth(pathLocator: string | null): number {
  if (!pathLocator) return 0;
  // The number of non-empty '/'-separated parts, counted without splitting: the poller sorts every page by it.
  let depth = 0;
  let inPart = false;
  for (let i = 0; i < pathLocator.length; i++) {
    const slash = pathLocator.charCodeAt(i) === 47;
    if (!slash && !inPart) depth++;
    inPart = !slash;
  }
  return depth;
}

/**
 * The proper ancestors a hierarchyid path names by its form (`/1/2/3/` → `/1/2/`, `/1/`), nearest first. Only a
 * guess for lookups (the parent column is what counts): a path of another shape yields nothing. Pure.
 */
export function ancestorPaths(pathLocator: string | null): string[] {
  if (!pathLocator || !/^\/(?:[^/]+\/)+$/.test(pathLocator)) return [];
  const parts = pathLocator.split('/').filter(Boolean);
  const out: string[] = [];
  for (let n = parts.length - 1; n >= 1; n--) out.push(`/${parts.slice(0, n).join('/')}/`);
  return out;
}
