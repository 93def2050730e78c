// node:fs plus a minimal globSync for Node 20 (added in Node 22). The
// conformance CLI imports it by name; it only globs "**/<file>" patterns.
import fs from 'node:fs';
import path from 'node:path';

export * from 'node:fs';
export default fs;

export function globSync(pattern, options = {}) {
  if (fs.globSync) return fs.globSync(pattern, options);
  const cwd = options.cwd ?? process.cwd();
  const base = pattern.replace(/^\*\*\//, '');
  const out = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(path.join(cwd, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else if (e.name === base) out.push(rel);
    }
  };
  walk('');
  return out;
}
