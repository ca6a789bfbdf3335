/**
 * infra/npm-deps.mjs, the step before every `npm run …` script, on a scratch copy of the repository
 * with a stand-in npm (npm_execpath) that records its calls and creates the binaries `npm ci` would:
 * installs when node_modules is missing or stale, not when it is up to date, once when two scripts
 * start at once, and never writes on stdout.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { REPO_ROOT } from '../../infra/settings';

const scratch: string[] = [];
afterEach(() => {
  for (const dir of scratch.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A stand-in for npm: logs its arguments, sleeps a little (a real install takes a while), creates the bins. */
const FAKE_NPM = `
const fs = require('node:fs');
const path = require('node:path');
fs.appendFileSync(path.join(process.cwd(), 'npm-calls.log'), process.argv.slice(2).join(' ') + '\\n');
if (process.env.FAKE_NPM_FAIL === '1') { console.error('npm ERR! simulated'); process.exit(1); }
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000);
fs.rmSync('node_modules', { recursive: true, force: true });
fs.mkdirSync('node_modules/.bin', { recursive: true });
for (const bin of ['tsx', 'vitest']) fs.writeFileSync(path.join('node_modules/.bin', bin), '');
console.log('added 2 packages');
`;

function scratchRepo(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'valuedrift-npm-deps-'));
  scratch.push(dir);
  fs.mkdirSync(path.join(dir, 'infra'));
  fs.copyFileSync(path.join(REPO_ROOT, 'infra', 'npm-deps.mjs'), path.join(dir, 'infra', 'npm-deps.mjs'));
  fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': {}, 'node_modules/a': { version: '1.0.0' } } }));
  fs.writeFileSync(path.join(dir, 'fake-npm.js'), FAKE_NPM);
  return dir;
}

function run(dir: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(dir, 'infra', 'npm-deps.mjs')], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? '', npm_execpath: path.join(dir, 'fake-npm.js'), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const calls = (dir: string): string[] => {
  try {
    return fs.readFileSync(path.join(dir, 'npm-calls.log'), 'utf8').trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

describe('infra/npm-deps.mjs', () => {
  it('installs when node_modules is missing, says so on stderr only, and stamps the lock', async () => {
    const dir = scratchRepo();
    const res = await run(dir);
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/\[npm-deps\] node_modules is missing: installing the npm packages \(npm ci/);
    expect(res.stderr).toMatch(/added 2 packages/); // npm's own output, sent to stderr too
    expect(calls(dir)).toEqual(['ci --include=dev --no-audit --no-fund --no-update-notifier']);
    expect(fs.readFileSync(path.join(dir, 'node_modules', '.valuedrift-lock.sha256'), 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);

    // Up to date: nothing run, nothing said.
    const again = await run(dir);
    expect(again).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(calls(dir)).toHaveLength(1);
  });

  it('reinstalls when package-lock.json changed or a binary is gone', async () => {
    const dir = scratchRepo();
    await run(dir);
    fs.writeFileSync(path.join(dir, 'package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': {}, 'node_modules/a': { version: '2.0.0' } } }));
    expect((await run(dir)).stderr).toMatch(/package-lock\.json changed since the last install/);
    fs.rmSync(path.join(dir, 'node_modules', '.bin', 'tsx'));
    expect((await run(dir)).stderr).toMatch(/node_modules\/\.bin lacks tsx/);
    expect(calls(dir)).toHaveLength(3);
  });

  it('adopts a tree npm installed from this lock before the stamp existed, and not another one', async () => {
    const dir = scratchRepo();
    fs.mkdirSync(path.join(dir, 'node_modules', '.bin'), { recursive: true });
    for (const bin of ['tsx', 'vitest']) fs.writeFileSync(path.join(dir, 'node_modules', '.bin', bin), '');
    const hidden = path.join(dir, 'node_modules', '.package-lock.json');
    fs.writeFileSync(hidden, JSON.stringify({ packages: { 'node_modules/a': { version: '1.0.0' } } }));
    expect(await run(dir)).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(calls(dir)).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'node_modules', '.valuedrift-lock.sha256'))).toBe(true);

    fs.rmSync(path.join(dir, 'node_modules', '.valuedrift-lock.sha256'));
    fs.writeFileSync(hidden, JSON.stringify({ packages: { 'node_modules/a': { version: '0.9.0' } } }));
    expect((await run(dir)).stderr).toMatch(/node_modules was not installed from this package-lock\.json/);
    expect(calls(dir)).toHaveLength(1);
  });

  it('installs once when two scripts start at once', async () => {
    const dir = scratchRepo();
    const [a, b] = await Promise.all([run(dir), run(dir)]);
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(calls(dir)).toHaveLength(1);
    expect(`${a.stderr}${b.stderr}`).toMatch(/waiting for pid \d+, which is installing the npm packages/);
  });

  it('fails with npm exit status, writes no stamp, and is a no-op inside its own npm ci', async () => {
    const dir = scratchRepo();
    const failed = await run(dir, { FAKE_NPM_FAIL: '1' });
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/\[npm-deps\] error: npm ci failed \(exit 1\)/);
    expect(fs.existsSync(path.join(dir, 'node_modules', '.valuedrift-lock.sha256'))).toBe(false);

    const nested = await run(dir, { VALUEDRIFT_NPM_DEPS_RUNNING: '1' });
    expect(nested).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(calls(dir)).toHaveLength(1);
  });
});
