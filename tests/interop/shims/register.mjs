// node --import ./shims/register.mjs: gives the conformance CLI an fs with
// globSync on Node 20, by resolving its 'fs' import to shims/fs-globsync.mjs.
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
