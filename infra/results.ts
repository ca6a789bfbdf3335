/**
 * Test-result counting for `npm test`: vitest's JSON report and pytest's JUnit XML, reduced to
 * passed / failed / skipped. Pure functions of the report text and the runner's exit code.
 */
import { z } from 'zod';

export interface Counts {
  passed: number;
  failed: number;
  skipped: number;
}

const VitestReport = z.object({
  numPassedTests: z.number(),
  numFailedTests: z.number(),
  numPendingTests: z.number(),
  numTodoTests: z.number(),
  testResults: z.array(
    z.object({
      status: z.string(),
      assertionResults: z.array(z.unknown()),
    }),
  ),
});

/** `report`: the JSON reporter's file, or null when vitest wrote none. */
export function vitestCounts(report: string | null, exitCode: number | null): Counts {
  // No report: vitest failed before running anything (config error, no test files).
  if (report === null) return { passed: 0, failed: exitCode === 0 ? 0 : 1, skipped: 0 };
  const parsed = VitestReport.parse(JSON.parse(report));
  // A file that fails to load (import error, failing beforeAll) has no failed tests of its own.
  const brokenFiles = parsed.testResults.filter((f) => f.status === 'failed' && f.assertionResults.length === 0).length;
  const counts = {
    passed: parsed.numPassedTests,
    failed: parsed.numFailedTests + brokenFiles,
    skipped: parsed.numPendingTests + parsed.numTodoTests,
  };
  // A non-zero exit with nothing failed: an unhandled error between tests, which vitest fails on.
  if (counts.failed === 0 && exitCode !== 0) counts.failed = 1;
  return counts;
}

/** pytest's "no tests were collected" exit status: not a failure by itself. */
const PYTEST_NO_TESTS = 5;

/** `xml`: the JUnit XML file (sums every <testsuite>), or null when pytest wrote none. */
export function pytestCounts(xml: string | null, exitCode: number | null): Counts {
  const ok = (code: number | null) => code === 0 || code === PYTEST_NO_TESTS;
  if (xml === null) return { passed: 0, failed: ok(exitCode) ? 0 : 1, skipped: 0 };
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const match of xml.matchAll(/<testsuite\b([^>]*)>/g)) {
    const attrs = match[1] ?? '';
    const attr = (name: string) => Number(new RegExp(`\\b${name}="(\\d+)"`).exec(attrs)?.[1] ?? 0);
    const failed = attr('failures') + attr('errors');
    const skipped = attr('skipped');
    counts.passed += attr('tests') - failed - skipped;
    counts.failed += failed;
    counts.skipped += skipped;
  }
  if (counts.failed === 0 && !ok(exitCode)) counts.failed = 1;
  return counts;
}
