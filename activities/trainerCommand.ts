/**
 * Runs one trainer command to completion (generation, dataset export) with heartbeats and
 * cancellation, and classifies its failure: error kinds a retry cannot fix become non-retryable.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { activityContext } from './context';
import { ApplicationFailure } from '@temporalio/common';
import { NON_RETRYABLE_TRAINER_ERRORS, type TrainerEvent } from '../common/contracts';
import { workerEnv } from './env';
import { gpuPool } from './gpus';
import { lastLines, spawnTrainer } from './trainerProcess';

export interface TrainerCommandInput {
  command: string;
  config: Record<string, unknown>;
  /** What is being done, for messages ("generation for sft step 6"). */
  what: string;
  /** GPUs to lease from this node's pool for the run (0: none; hidden from the GPUs on a GPU node). */
  gpus?: number;
  onEvent?: (e: TrainerEvent) => void;
}


/** Turns a trainer failure into the right Temporal failure. */
export function trainerFailure(what: string, err: Extract<TrainerEvent, { event: 'error' }> | undefined, exit: { code: number | null; signal: NodeJS.Signals | null }, stderr: string): ApplicationFailure {
  const tail = lastLines(stderr, 15);
  if (err && (NON_RETRYABLE_TRAINER_ERRORS as readonly string[]).includes(err.kind)) {
    // Same config, data and model give the same refusal: retrying only burns GPU time.
    return ApplicationFailure.nonRetryable(`${what}: ${err.kind}: ${err.message}`, `Trainer_${err.kind}`, { stderrTail: tail });
  }
  const how = err ? `${err.kind}: ${err.message}` : `exited with ${exit.signal ?? `code ${exit.code}`}`;
  return ApplicationFailure.retryable(`${what}: ${how}\n${tail}`, 'TrainerFailed');
}

export async function runTrainerCommand(input: TrainerCommandInput): Promise<Extract<TrainerEvent, { event: 'done' }>> {
  const env = workerEnv();
  const ctx = activityContext();
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'valuedrift-cmd-'));
  const cfg = path.join(dir, 'config.json');
  await fs.writeFile(cfg, JSON.stringify(input.config, null, 2));
  let done: Extract<TrainerEvent, { event: 'done' }> | undefined;
  let error: Extract<TrainerEvent, { event: 'error' }> | undefined;
  let last: TrainerEvent | undefined;
  const lease = await gpuPool().acquire(input.gpus ?? 0, { whileWaiting: () => ctx?.heartbeat(), signal: ctx?.cancellationSignal });
  const run = spawnTrainer({
    python: env.python,
    args: [input.command, '--config', cfg],
    env: lease.env,
    onEvent: (e) => {
      last = e;
      if (e.event === 'done') done = e;
      if (e.event === 'error') error = e;
      input.onEvent?.(e);
    },
  });
  const beat = setInterval(() => ctx?.heartbeat(last), 5_000);
  const onCancel = () => void run.kill();
  ctx?.cancellationSignal.addEventListener('abort', onCancel);
  try {
    const exit = await run.exit;
    if (ctx?.cancellationSignal.aborted) throw ctx.cancellationSignal.reason ?? new Error('cancelled');
    if (exit.code === 0 && done) return done;
    throw trainerFailure(input.what, error, exit, run.stderrTail());
  } finally {
    clearInterval(beat);
    ctx?.cancellationSignal.removeEventListener('abort', onCancel);
    await run.kill(1_000);
    lease.release();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
