#!/usr/bin/env node
/**
 * The step before every `npm run …` entry the README names (package.json prefixes each with
 * `node infra/npm-deps.mjs &&`): makes sure node_modules matches package-lock.json, running
 * `npm ci` when it is missing or stale, so that `npm run demo` works on a fresh clone with nothing
 * typed before it. Plain Node and no npm packages (nothing is installed yet when it runs); ESM so
 * that it works unchanged on Node 20 and 22+.
 *
 * Up to date means: node_modules/.valuedrift-lock.sha256 holds the sha256 of package-lock.json
 * (written after a successful install). A tree installed before this step existed has no stamp:
 * it is adopted (stamped, nothing reinstalled) when npm's own record of what it installed
 * (node_modules/.package-lock.json) has every locked package at its locked version.
 *
 * Messages go to stderr (and so does npm's output), so that a command's stdout (`lineage status
 * --json`) stays clean. Two scripts started at once take turns on a lock file; the second finds
 * the tree installed and goes on.
 *
 * `npm ci` runs the root package's install scripts (preinstall/install/postinstall/prepare);
 * package.json defines none, and VALUEDRIFT_NPM_DEPS_RUNNING makes a nested call return at once
 * should one ever run this step.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const LOCK_JSON = path.join(ROOT, 'package-lock.json');
const NODE_MODULES = path.join(ROOT, 'node_modules');
const STAMP = path.join(NODE_MODULES, '.valuedrift-lock.sha256');
const HIDDEN_LOCK = path.join(NODE_MODULES, '.package-lock.json');
/** Outside node_modules: `npm ci` deletes that directory first. `.data/` is git-ignored. */
const INSTALL_LOCK = path.join(ROOT, '.data', 'npm-ci.lock');
/** The binaries the scripts call; each must exist after an install. */
const REQUIRED_BINS = ['tsx', 'vitest'];
const RUNNING_ENV = 'VALUEDRIFT_NPM_DEPS_RUNNING';
/** A first `npm ci` on a slow mirror takes minutes; past this, a live lock holder is an error. */
const LOCK_WAIT_MS = 20 * 60_000;

const say = (line) => process.stderr.write(`[npm-deps] ${line}\n`);

function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function lockHash() {
  let text;
  try {
    text = fs.readFileSync(LOCK_JSON);
  } catch {
    throw new Error(`${LOCK_JSON} is missing: run this from a complete checkout of the repository`);
  }
  return createHash('sha256').update(text).digest('hex');
}

function readText(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function binsPresent() {
  return REQUIRED_BINS.every((bin) => fs.existsSync(path.join(NODE_MODULES, '.bin', bin)));
}

/** Why node_modules does not match the lock, or null when it does. */
function staleReason(hash) {
  if (!fs.existsSync(NODE_MODULES)) return 'node_modules is missing';
  if (!binsPresent()) return `node_modules/.bin lacks ${REQUIRED_BINS.filter((b) => !fs.existsSync(path.join(NODE_MODULES, '.bin', b))).join(', ')}`;
  const stamp = readText(STAMP)?.trim();
  if (stamp === hash) return null;
  if (stamp !== undefined) return 'package-lock.json changed since the last install';
  return matchesNpmRecord() ? null : 'node_modules was not installed from this package-lock.json';
}

/**
 * Whether npm's record of the installed tree has every locked package at its locked version (the
 * platform's skipped optional packages aside) and nothing else.
 */
function matchesNpmRecord() {
  let locked;
  let installed;
  try {
    locked = JSON.parse(fs.readFileSync(LOCK_JSON, 'utf8')).packages ?? {};
    installed = JSON.parse(fs.readFileSync(HIDDEN_LOCK, 'utf8')).packages ?? {};
  } catch {
    return false;
  }
  for (const [key, entry] of Object.entries(locked)) {
    if (!key.startsWith('node_modules/')) continue;
    const have = installed[key];
    if (have === undefined) {
      if (entry.optional === true) continue;
      return false;
    }
    if (have.version !== entry.version) return false;
  }
  return Object.keys(installed).every((key) => !key.startsWith('node_modules/') || key in locked);
}

/** Exclusive lock (O_EXCL file with our pid); a lock whose holder has died is taken over. */
function acquireLock() {
  fs.mkdirSync(path.dirname(INSTALL_LOCK), { recursive: true });
  const deadline = Date.now() + LOCK_WAIT_MS;
  let announced = false;
  for (;;) {
    try {
      fs.writeFileSync(INSTALL_LOCK, String(process.pid), { flag: 'wx' });
      return;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
    }
    const pid = Number(readText(INSTALL_LOCK));
    if (!holderAlive(pid)) {
      fs.rmSync(INSTALL_LOCK, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`pid ${pid} has held ${INSTALL_LOCK} for over ${LOCK_WAIT_MS / 60_000} min; gave up waiting`);
    if (!announced) {
      say(`waiting for pid ${pid}, which is installing the npm packages`);
      announced = true;
    }
    sleepSync(500);
  }
}

function holderAlive(pid) {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
}

function releaseLock() {
  if (readText(INSTALL_LOCK) === String(process.pid)) fs.rmSync(INSTALL_LOCK, { force: true });
}

/** npm itself: the one running this script when there is one, else `npm` from PATH. */
function npmCommand() {
  const cli = process.env.npm_execpath;
  if (cli !== undefined && cli !== '' && /\.c?js$/.test(cli) && fs.existsSync(cli)) return [process.execPath, [cli]];
  return ['npm', []];
}

function npmCi(reason) {
  say(`${reason}: installing the npm packages (npm ci; first time about a minute)`);
  const started = Date.now();
  const [cmd, pre] = npmCommand();
  const res = spawnSync(cmd, [...pre, 'ci', '--include=dev', '--no-audit', '--no-fund', '--no-update-notifier'], {
    cwd: ROOT,
    // stdout to stderr too: this step must not write on the command's stdout.
    stdio: ['ignore', 2, 2],
    env: { ...process.env, [RUNNING_ENV]: '1', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' },
    shell: false,
  });
  if (res.error !== undefined) throw new Error(`could not run npm (${res.error.message}); install Node.js with npm, then run \`npm ci\``);
  if (res.status !== 0) throw new Error(`npm ci failed (exit ${res.status ?? res.signal}); its output is above`);
  if (!binsPresent()) throw new Error(`npm ci finished but node_modules/.bin lacks ${REQUIRED_BINS.join(' or ')}`);
  say(`npm packages installed in ${Math.round((Date.now() - started) / 1000)} s`);
}

function main() {
  if (process.env[RUNNING_ENV] === '1') return;
  const hash = lockHash();
  if (staleReason(hash) === null) {
    if (readText(STAMP)?.trim() !== hash) fs.writeFileSync(STAMP, `${hash}\n`);
    return;
  }
  acquireLock();
  try {
    // Another script may have installed while we waited.
    const reason = staleReason(hash);
    if (reason !== null) {
      npmCi(reason);
      fs.writeFileSync(STAMP, `${hash}\n`);
    } else if (readText(STAMP)?.trim() !== hash) {
      fs.writeFileSync(STAMP, `${hash}\n`);
    }
  } finally {
    releaseLock();
  }
}

try {
  main();
} catch (err) {
  say(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
