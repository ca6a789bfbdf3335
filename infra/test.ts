/**
 * `npm test`: prepares what the tests need, runs both suites, prints one summary line.
 *
 *   npm test                  # Python env, Chromium, local stack (Temporal, S3, judge), vitest, then pytest
 *   npm test -- test/unit     # vitest only, on the given filters (pytest is skipped)
 *
 * `npm run` has already installed the npm packages (infra/npm-deps.mjs). Debian's Chromium, for the
 * browser test, is installed here when it is missing and this runs as root with apt-get; otherwise
 * the browser test skips, saying what is missing and how to get it.
 *
 * The tests start their own workers, so the stack comes up without them. Services this run started
 * are stopped at the end; services that were already running are left running. The last line
 * printed is always `N passed, N failed, N skipped` (both suites together); the exit status is
 * non-zero when anything failed or when no test ran.
 */
import fs from 'node:fs';
import path from 'node:path';

import { ensureChromium } from './chromium';
import { DATA_DIR, TRAINER_DIR, VITEST_BIN } from './paths';
import { type LogFn, runCommand } from './proc';
import { ensurePythonEnv } from './python';
import { ensureS3Server } from './services/s3';
import { type Counts, pytestCounts, vitestCounts } from './results';
import { REPO_ROOT, quietAwsSdkNodeWarning } from './settings';
import { stackDown, stackUp } from './stack';

const VITEST_JSON = path.join(DATA_DIR, 'vitest.json');
const PYTEST_XML = path.join(DATA_DIR, 'pytest.xml');
const TRAINER_TESTS = path.join(TRAINER_DIR, 'tests');
/** A suite that hangs must not hold CI until its own limit. */
const SUITE_TIMEOUT_MS = 60 * 60_000;

const log: LogFn = (line) => console.log(`[test] ${line}`);

quietAwsSdkNodeWarning();

/** The browser test: Chromium is installed (as root) only when a run includes it. */
const BROWSER_TESTS = 'test/browser/ui-start.test.ts';

/** Whether vitest's file filters (substrings of a path) select the browser test. */
function runsBrowserTest(filters: readonly string[]): boolean {
  return filters.length === 0 || filters.some((f) => BROWSER_TESTS.includes(f.replace(/^\.\//, '')));
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function hasPythonTests(): boolean {
  try {
    return fs.readdirSync(TRAINER_TESTS).some((f) => /^test_.*\.py$|_test\.py$/.test(f));
  } catch {
    return false;
  }
}

async function main(): Promise<number> {
  // npm passes what follows `--` as plain arguments; a literal `--` may still come through.
  const vitestArgs = process.argv.slice(2).filter((a) => a !== '--');
  const filters = vitestArgs.filter((a) => !a.startsWith('-'));
  const filtered = filters.length > 0;

  // The local S3 server's Go build runs while pip works (both are no-ops once done).
  const [py] = await Promise.all([ensurePythonEnv({ log }), ensureS3Server({ log })]);
  if (runsBrowserTest(filters)) await ensureChromium(log);
  let stopAtEnd: string[] = [];
  const totals: Counts = { passed: 0, failed: 0, skipped: 0 };
  let runnerTrouble = false;

  const cleanup = async () => {
    if (stopAtEnd.length === 0) return;
    const names = stopAtEnd;
    stopAtEnd = [];
    log(`stopping what this run started: ${names.join(', ')}`);
    await stackDown({ only: names, log });
  };
  // Ctrl-C or CI's own timeout: still stop what we started (the children get the signal too).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      void cleanup().finally(() => process.exit(130));
    });
  }

  try {
    const up = await stackUp({ workers: false, judge: true, log, rollbackOnFailure: true });
    stopAtEnd = up.started;
    if (up.reused.length > 0) log(`already running, left running afterwards: ${up.reused.join(', ')}`);
    const env: NodeJS.ProcessEnv = { ...process.env, ...up.env };

    fs.rmSync(VITEST_JSON, { force: true });
    log(`vitest ${vitestArgs.join(' ')}`.trimEnd());
    const vitest = await runCommand(
      VITEST_BIN,
      ['run', '--reporter=default', '--reporter=json', `--outputFile=${VITEST_JSON}`, ...vitestArgs],
      {
        cwd: REPO_ROOT,
        env,
        timeoutMs: SUITE_TIMEOUT_MS,
        keepChars: 0,
        onLine: (line, stream) => (stream === 'stdout' ? process.stdout : process.stderr).write(`${line}\n`),
      },
    );
    const v = vitestCounts(readOrNull(VITEST_JSON), vitest.code);
    log(`vitest: ${v.passed} passed, ${v.failed} failed, ${v.skipped} skipped (exit ${vitest.code ?? vitest.signal})`);
    totals.passed += v.passed;
    totals.failed += v.failed;
    totals.skipped += v.skipped;

    if (filtered) {
      log('pytest: skipped (vitest filters given; run `npm test` without arguments for both suites)');
    } else if (!hasPythonTests()) {
      log(`pytest: no tests in ${path.relative(REPO_ROOT, TRAINER_TESTS)}`);
    } else {
      fs.rmSync(PYTEST_XML, { force: true });
      log('pytest trainer/tests');
      const pytest = await runCommand(
        py.python,
        ['-m', 'pytest', path.relative(REPO_ROOT, TRAINER_TESTS), '-q', `--junitxml=${PYTEST_XML}`, '-p', 'no:cacheprovider'],
        {
          cwd: REPO_ROOT,
          env: { ...env, PYTHONUNBUFFERED: '1' },
          timeoutMs: SUITE_TIMEOUT_MS,
          keepChars: 0,
          onLine: (line, stream) => (stream === 'stdout' ? process.stdout : process.stderr).write(`${line}\n`),
        },
      );
      const p = pytestCounts(readOrNull(PYTEST_XML), pytest.code);
      log(`pytest: ${p.passed} passed, ${p.failed} failed, ${p.skipped} skipped (exit ${pytest.code ?? pytest.signal})`);
      totals.passed += p.passed;
      totals.failed += p.failed;
      totals.skipped += p.skipped;
    }
  } catch (err) {
    // The stack (or the environment) could not be prepared: no test could run.
    console.error(err instanceof Error ? err.message : err);
    runnerTrouble = true;
  } finally {
    await cleanup();
  }

  if (runnerTrouble && totals.failed === 0) totals.failed = 1;
  const ranNothing = totals.passed + totals.failed === 0;
  if (ranNothing) log('no test ran');
  console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
  return totals.failed > 0 || ranNothing ? 1 : 0;
}

main()
  .then((code) => {
    process.exitCode = code;
  })
  .catch((err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    console.log('0 passed, 1 failed, 0 skipped');
    process.exitCode = 1;
  });
