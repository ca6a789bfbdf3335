/**
 * `runTrainerCommand`: the one supervisor of a trainer process, used by training, generation and
 * dataset export. It owns the whole life of the process:
 *
 *   lease GPUs from this node's pool (heartbeating while it waits) → spawn `python -m
 *   valuedrift_trainer <command> --config …` (accelerate for a multi-GPU training stage) → heartbeat
 *   the caller's details every few seconds → on cancellation kill the process group → after exit,
 *   make sure the group is gone and return the lease (always, whatever failed) → classify the outcome.
 *
 * Outcomes: the trainer's `done` event on exit code 0; a trainer `error` event whose kind a retry
 * cannot fix → non-retryable failure; any other exit, or an executable that cannot be started →
 * retryable failure with the stderr tail; cancellation → the activity's cancellation.
 */
import { accessSync, constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { NON_RETRYABLE_TRAINER_ERRORS, type TrainerEvent } from '../common/contracts';
import { activityContext } from './context';
import { scrubSecrets, workerEnv } from './env';
import { accelerateLauncher, gpuPool } from './gpus';
import { freePort } from './net';
import { lastLines, spawnTrainer, TrainerSpawnError, type TrainerExit, type TrainerRun } from './trainerProcess';

export type DoneEvent = Extract<TrainerEvent, { event: 'done' }>;
export type ErrorEvent = Extract<TrainerEvent, { event: 'error' }>;

/** How often the supervisor heartbeats while the trainer runs (the worker throttles further). */
export const HEARTBEAT_EVERY_MS = 5_000;
/** SIGTERM → SIGKILL grace on cancellation (the trainer may be writing a checkpoint). */
const CANCEL_GRACE_MS = 10_000;
/** Grace for stragglers left in the group after the trainer itself has exited. */
const CLEANUP_GRACE_MS = 2_000;

export interface TrainerCommandInput {
  /** The trainer's subcommand: `train`, `generate`, `export-dataset`, … */
  command: string;
  /** Written as the `--config` JSON file. */
  config: Record<string, unknown>;
  /** What is being done, for messages ("generation for sft step 6"). */
  what: string;
  /** GPUs to lease from this node's pool for the run (0: none; hidden from the GPUs on a GPU node). */
  gpus?: number;
  /** Launch through accelerate with one process per GPU when `gpus` > 1 (data-parallel training). */
  distributed?: boolean;
  /** Every event the trainer prints, with the pid of its process group. */
  onEvent?: (e: TrainerEvent, pid: number) => void;
  /** The heartbeat details (default: the trainer's last event). */
  heartbeat?: () => unknown;
  /** Runs once the process exists; a failure here stops it (e.g. recording its pid for a later attempt). */
  onSpawn?: (pid: number) => Promise<void>;
  /**
   * Runs after the process has exited, its group is gone and the lease is returned, still under
   * heartbeats (e.g. waiting for checkpoint uploads). Throwing fails the run with that error, unless
   * the activity was cancelled.
   */
  afterExit?: () => Promise<void>;
}

/** Turns a trainer failure into the right Temporal failure. */
export function trainerFailure(what: string, err: ErrorEvent | undefined, exit: TrainerExit, stderr: string): ApplicationFailure {
  // Failure messages and details are kept in workflow history: no credential value may reach them.
  const tail = scrubSecrets(lastLines(stderr, 15));
  const message = err ? scrubSecrets(err.message) : '';
  if (err && (NON_RETRYABLE_TRAINER_ERRORS as readonly string[]).includes(err.kind)) {
    // Same config, data and model give the same refusal: retrying only burns GPU time.
    return ApplicationFailure.nonRetryable(`${what}: ${err.kind}: ${message}`, `Trainer_${err.kind}`, { stderrTail: tail });
  }
  const how = err ? `${err.kind}: ${message}` : `exited with ${exit.signal ?? `code ${exit.code}`}`;
  return ApplicationFailure.retryable(`${what}: ${how}\n${tail}`, 'TrainerFailed');
}

/** Which setting names the trainer's Python on this worker, and how to fix it. */
function pythonSetting(): string {
  const env = workerEnv();
  return env.VALUEDRIFT_PYTHON !== undefined
    ? `VALUEDRIFT_PYTHON=${env.VALUEDRIFT_PYTHON}`
    : `the repository's Python environment (${env.python}; create it with \`npm run dev:up\`, or set VALUEDRIFT_PYTHON)`;
}

/**
 * The trainer could not be started on this worker. Retryable: it is this worker's setup (another
 * worker, or this one once fixed, can run it); the message says which setting to fix.
 */
export function spawnFailure(what: string, err: TrainerSpawnError): ApplicationFailure {
  return ApplicationFailure.retryable(`${what}: ${err.message}; check ${pythonSetting()}`, 'TrainerSpawnFailed');
}

/** Why this worker cannot start the trainer (its Python is missing or not executable), or null. */
export function trainerPythonProblem(): string | null {
  const python = workerEnv().python;
  try {
    accessSync(python, constants.X_OK);
    return null;
  } catch (err) {
    return `cannot run the trainer: ${python} is not executable (${(err as NodeJS.ErrnoException).code ?? String(err)}); check ${pythonSetting()}`;
  }
}

export async function runTrainerCommand(input: TrainerCommandInput): Promise<DoneEvent> {
  const env = workerEnv();
  const ctx = activityContext();
  const signal = ctx?.cancellationSignal;
  const gpus = input.gpus ?? 0;
  let last: TrainerEvent | undefined;
  let done: DoneEvent | undefined;
  let error: ErrorEvent | undefined;
  const stray: string[] = [];
  const beat = () => ctx?.heartbeat(input.heartbeat ? input.heartbeat() : last);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'valuedrift-cmd-'));
  const timer = setInterval(beat, HEARTBEAT_EVERY_MS);
  try {
    const cfg = path.join(dir, 'config.json');
    await fs.writeFile(cfg, JSON.stringify(input.config, null, 2));
    // This node's GPUs are shared by concurrent jobs: lease this run's own, waiting (the timer keeps
    // heartbeating) while others hold them.
    const lease = await gpuPool().acquire(gpus, { signal });
    let run: TrainerRun | undefined;
    let exit: TrainerExit;
    const onCancel = () => void run?.kill(CANCEL_GRACE_MS);
    signal?.addEventListener('abort', onCancel);
    try {
      signal?.throwIfAborted();
      const launcher = input.distributed && gpus > 1 ? accelerateLauncher(gpus, await freePort()) : undefined;
      try {
        run = await spawnTrainer({
          python: env.python,
          args: [input.command, '--config', cfg],
          launcher,
          env: lease.env,
          onEvent: (e, pid) => {
            last = e;
            if (e.event === 'done') done = e;
            if (e.event === 'error') error = e;
            input.onEvent?.(e, pid);
          },
          onStrayLine: (l) => stray.push(l),
        });
      } catch (err) {
        throw err instanceof TrainerSpawnError ? spawnFailure(input.what, err) : err;
      }
      signal?.throwIfAborted(); // cancelled while it was starting
      await input.onSpawn?.(run.pid);
      exit = await run.exit;
    } finally {
      signal?.removeEventListener('abort', onCancel);
      try {
        // Nothing the trainer started outlives the run (a no-op when the group is already gone).
        await run?.kill(CLEANUP_GRACE_MS);
      } finally {
        lease.release();
      }
    }

    let settleFailed = false;
    let settleError: unknown;
    try {
      await input.afterExit?.();
    } catch (err) {
      settleFailed = true;
      settleError = err;
    }
    signal?.throwIfAborted();
    if (settleFailed) throw settleError;
    if (exit.code === 0 && done) return done;
    const extra = stray.length ? `\nunexpected stdout: ${stray.slice(-3).join(' | ')}` : '';
    throw trainerFailure(input.what, error, exit, run.stderrTail() + extra);
  } finally {
    clearInterval(timer);
    await fs.rm(dir, { recursive: true, force: true });
  }
}
