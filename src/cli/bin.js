#!/usr/bin/env node
// The `highwater` executable: runs the TypeScript sources through tsx, so no build step stands between a checkout
// and a working command.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv);
