import { generateHistory, SHAPES, describeOp } from '../history.js';
for (const size of ['small', 'large'] as const) {
  const tot: Record<string, number> = {};
  for (let s = 1; s <= 50; s++) {
    const h = generateHistory(s, SHAPES[size]);
    for (const op of h.ops) { const k = op.kind === 'insert' ? `insert:${op.why}:${op.stamp.kind}` : op.kind === 'update' ? `update:${op.stamp.kind}` : op.kind === 'kill' ? `kill:${op.who}` : op.kind; tot[k] = (tot[k] ?? 0) + 1; }
  }
  console.log(size, Object.entries(tot).sort().map(([k, v]) => `${k}=${(v / 50).toFixed(1)}`).join('  '));
}
const a = generateHistory(7, SHAPES.small).ops.map(describeOp).join('\n'); const b = generateHistory(7, SHAPES.small).ops.map(describeOp).join('\n');
console.log('deterministic', a === b); console.log(a);
