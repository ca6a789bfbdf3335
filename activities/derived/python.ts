/**
 * Runs one of the trainer's Python steps for a built dataset (prompt selection, stance-analysis
 * retrieval, V-PRISM clustering): an argument array, no shell, and only the allow-listed part of
 * the worker's environment (childProcessEnv: no judge, generator, S3 or Temporal keys reach it).
 * The step reports a failure as a JSON line `{"event": "error", "kind", "message"}` on stdout; a
 * kind in `badInput` (the input itself is wrong) fails non-retryably, anything else retryably with
 * the tail of stderr, secrets scrubbed.
 */
import { execFile } from 'node:child_process';
import { ApplicationFailure } from '@temporalio/common';
import { childProcessEnv, scrubSecrets } from '../env';

export interface DerivedStep {
  /** Module and arguments after `python -m`. */
  args: string[];
  /** Names the step in failure messages ("V-PRISM clustering"). */
  what: string;
  /** Error kinds that mean bad input (non-retryable). */
  badInput: readonly string[];
  /** The retryable failure's type. */
  failureType: string;
}

function errorEvent(stdout: string): { kind?: string; message?: string } | undefined {
  for (const line of stdout.split('\n')) {
    try {
      const e = JSON.parse(line) as { event?: string; kind?: string; message?: string };
      if (e?.event === 'error') return e;
    } catch {
      // not a protocol line
    }
  }
  return undefined;
}

export function runDerivedStep(python: string, step: DerivedStep, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(
      python,
      ['-m', ...step.args],
      { maxBuffer: 16 * 1024 * 1024, env: childProcessEnv({ PYTHONUNBUFFERED: '1', TOKENIZERS_PARALLELISM: 'false' }), shell: false, ...(signal && { signal }) },
      (err, stdout, stderr) => {
        if (!err) return resolve();
        const event = errorEvent(String(stdout));
        if (event?.kind !== undefined && step.badInput.includes(event.kind)) reject(ApplicationFailure.nonRetryable(`${step.what}: ${event.message ?? ''}`, 'DerivedDatasetInput'));
        else reject(ApplicationFailure.retryable(`${step.what} failed: ${scrubSecrets(event?.message ?? String(stderr).slice(-2000))}`, step.failureType));
      },
    );
  });
}
