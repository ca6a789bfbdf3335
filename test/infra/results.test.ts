/** How `npm test` counts results: what CI reads from its last line. */
import { describe, expect, it } from 'vitest';

import { pytestCounts, vitestCounts } from '../../infra/results';

// Shape of pytest 9's --junitxml output (trimmed): 4 tests, 1 failure, 1 skipped.
const PYTEST_XML =
  '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="0" ' +
  'failures="1" skipped="1" tests="4" time="0.027" hostname="vm"><testcase classname="test_x" name="test_a" time="0.000" />' +
  '</testsuite></testsuites>';

function vitestReport(over: Partial<Record<string, unknown>> = {}): string {
  return JSON.stringify({
    numPassedTests: 10,
    numFailedTests: 0,
    numPendingTests: 2,
    numTodoTests: 1,
    testResults: [{ name: 'a.test.ts', status: 'passed', assertionResults: [{}, {}] }],
    ...over,
  });
}

describe('pytestCounts', () => {
  it('sums a JUnit report, errors counting as failures', () => {
    expect(pytestCounts(PYTEST_XML, 1)).toEqual({ passed: 2, failed: 1, skipped: 1 });
    const withErrors = PYTEST_XML.replace('errors="0"', 'errors="1"');
    expect(pytestCounts(withErrors, 1)).toEqual({ passed: 1, failed: 2, skipped: 1 });
  });

  it('treats "no tests collected" (exit 5) as zero tests, not a failure', () => {
    expect(pytestCounts(null, 5)).toEqual({ passed: 0, failed: 0, skipped: 0 });
  });

  it('counts a crash without a report as a failure', () => {
    expect(pytestCounts(null, 2)).toEqual({ passed: 0, failed: 1, skipped: 0 });
    expect(pytestCounts(null, null)).toEqual({ passed: 0, failed: 1, skipped: 0 });
  });
});

describe('vitestCounts', () => {
  it('reads passed, failed and skipped (pending + todo)', () => {
    expect(vitestCounts(vitestReport(), 0)).toEqual({ passed: 10, failed: 0, skipped: 3 });
  });

  it('counts a test file that failed to load as a failure', () => {
    const report = vitestReport({
      testResults: [{ name: 'broken.test.ts', status: 'failed', message: 'import error', assertionResults: [] }],
    });
    expect(vitestCounts(report, 1)).toEqual({ passed: 10, failed: 1, skipped: 3 });
  });

  it('never reports success for a non-zero exit', () => {
    expect(vitestCounts(vitestReport(), 1).failed).toBe(1);
    expect(vitestCounts(null, 1)).toEqual({ passed: 0, failed: 1, skipped: 0 });
  });
});
