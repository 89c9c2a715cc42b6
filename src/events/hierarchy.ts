/** Depth of a hierarchy string such as `/1/2/3/` (3): parents sort before their children. Both sides order by it. */
export function hierarchyDepth(pathLocator: string | null): number {
  if (!pathLocator) return 0;
  return pathLocator.split('/').filter(Boolean).length;
}
