// The TypeScript declarations are generated from the JSDoc of the client (tsc --declaration
// --allowJs --emitDeclarationOnly, apigw_ws_core/client/tsconfig.json): they must declare exactly
// what the module exports, and type-check a realistic use (tests/js/types/usage.ts) under strict.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import * as client from '../../apigw_ws_core/client/apigw-ws.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const tsc = join(root, 'node_modules/.bin/tsc');
const skip = !existsSync(tsc) && 'typescript not installed (npm ci)';
const out = mkdtempSync(join(tmpdir(), 'apigw-ws-dts-'));
after(() => rmSync(out, { recursive: true, force: true }));

test('the generated declarations declare every runtime export, and nothing else', { skip }, () => {
  execFileSync(tsc, ['-p', join(root, 'apigw_ws_core/client/tsconfig.json'), '--outDir', out], { stdio: 'pipe' });
  const dts = readFileSync(join(out, 'apigw-ws.d.ts'), 'utf8');
  const declared = new Set(
    [...dts.matchAll(/^export (?:declare )?(?:const|class|function) (\w+)/gm)].map((m) => m[1]),
  );
  if (/^export default /m.test(dts)) declared.add('default');
  assert.deepEqual([...declared].sort(), Object.keys(client).sort());
  assert.doesNotMatch(dts, /: any\b/, 'every public type is spelled out in the JSDoc');
  assert.doesNotMatch(dts, /^ {4}_\w+/m, 'internals are private');
});

test('the declarations type-check a realistic use', { skip }, () => {
  execFileSync(tsc, ['-p', join(root, 'apigw_ws_core/client/tsconfig.json')], { stdio: 'pipe' });
  execFileSync(tsc, ['-p', join(root, 'tests/js/tsconfig.json')], { stdio: 'pipe' });
});
