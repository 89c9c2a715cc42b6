#!/usr/bin/env node
// The `highwater` executable: runs the TypeScript sources through tsx, so no build step stands between a checkout
// and a working command.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('./main.ts');
const code = await main(process.argv);
process.exitCode = code;
// The command has finished: a handle a driver leaves open must not keep the process alive after it. The fault
// matrix saw `consume` print that it was exiting (a consumer stopped for good) and live on until killed, which a
// supervisor reads as a healthy process. Unref'd: a process that ends by itself ends at once, as before.
setTimeout(() => process.exit(code), 10_000).unref();
