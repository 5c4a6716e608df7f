// The TypeScript declarations shipped beside the client must match what it exports, and must
// type-check a realistic use (tests/js/types/usage.ts) with `tsc --strict`.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as client from '../../apigw_ws_core/client/apigw-ws.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dts = readFileSync(join(root, 'apigw_ws_core/client/apigw-ws.d.ts'), 'utf8');

test('every runtime export is declared, and nothing else is', () => {
  const declared = new Set(
    [...dts.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]),
  );
  if (/^export default /m.test(dts)) declared.add('default');
  assert.deepEqual([...declared].sort(), Object.keys(client).sort());
});

const tsc = join(root, 'node_modules/.bin/tsc');
test('the declarations type-check a realistic use', { skip: !existsSync(tsc) && 'typescript not installed (npm ci)' }, () => {
  execFileSync(tsc, ['-p', join(root, 'tests/js/tsconfig.json')], { stdio: 'pipe' });
});
