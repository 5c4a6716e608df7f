// The npm package (apigw_ws_core/client): `npm pack` builds an installable tarball whose
// declarations are generated from the JSDoc of apigw-ws.js; installed into an empty folder, a
// TypeScript consumer type-checks with `tsc` (bundler and Node16 resolution) and the module
// imports through the package's `exports` map.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const clientDir = join(root, 'apigw_ws_core', 'client');
const tsc = join(root, 'node_modules/.bin/tsc');
const work = mkdtempSync(join(tmpdir(), 'apigw-ws-client-pack-'));
after(() => rmSync(work, { recursive: true, force: true }));

const CONSUMER = `import ApigwWsClient, { connect, TokenError, type ClientOptions, type ConnectionState } from 'apigw-ws-client';

type Chat = { type: 'chat_message'; user: string; text: string };
type Presence = { type: 'presence'; users: string[] };

const options: ClientOptions = { tokenUrl: '/ws/token/', channel: 'general' };
const ws = new ApigwWsClient<Chat | Presence>(options);
ws.onMessage('chat_message', (m) => console.log(m.user.toUpperCase(), m.text));
ws.onMessage('presence', (m) => console.log(m.users.length));
// @ts-expect-error the server sends no such type
ws.onMessage('nope', () => {});
ws.on('denied', ({ status, message }) => console.log(status, message));
const state: ConnectionState = ws.state;
const sent: boolean = ws.send('chat_message', { text: 'hello' });
const other = connect<Chat>({ url: 'wss://example.test/prod' });
const denied: boolean = new TokenError('no', { status: 403 }).denied;
void [state, sent, other, denied];
`;

const npm = (args, cwd) => execFileSync('npm', args, { cwd, stdio: 'pipe', encoding: 'utf8' });

test('npm pack builds a package that installs and type-checks in an empty folder', {
  skip: !existsSync(tsc) && 'typescript not installed (npm ci)',
  timeout: 120_000,
}, () => {
  const packs = join(work, 'packs');
  mkdirSync(packs);
  npm(['pack', '--silent', '--pack-destination', packs], clientDir);
  const [tarball] = readdirSync(packs);
  assert.match(tarball, /^apigw-ws-client-\d+\.\d+\.\d+\.tgz$/);
  const listing = execFileSync('tar', ['tzf', join(packs, tarball)], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
  assert.deepEqual(listing, [
    'package/LICENSE', 'package/README.md', 'package/apigw-ws.d.ts', 'package/apigw-ws.js', 'package/package.json',
  ]);
  assert.ok(!existsSync(join(clientDir, 'LICENSE')), 'postpack removes the copied LICENSE');

  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  npm(['install', '--silent', '--offline', '--no-audit', '--no-fund', join(packs, tarball)], app);
  writeFileSync(join(app, 'index.ts'), CONSUMER);
  for (const [module, resolution] of [['ES2022', 'bundler'], ['Node16', 'Node16']]) {
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module, moduleResolution: resolution, lib: ['ES2022', 'DOM'],
        strict: true, noEmit: true, skipLibCheck: false, types: [],
      },
      files: ['index.ts'],
    }));
    execFileSync(tsc, ['-p', join(app, 'tsconfig.json')], { cwd: app, stdio: 'pipe' });
  }
  // The exports map resolves at runtime too.
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    "import C, { VERSION, ApigwWsClient } from 'apigw-ws-client'; console.log(C === ApigwWsClient, VERSION)"],
  { cwd: app, encoding: 'utf8' });
  assert.match(out, /^true \d+\.\d+\.\d+/);
});
