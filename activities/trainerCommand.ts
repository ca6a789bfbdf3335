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
 *
 * Two more ways a run ends early, both by killing the process group and failing retryably: the
 * trainer prints no event for `stall.ms` (a hung trainer: heartbeats come from a timer, so without
 * this a deadlocked trainer would hold its GPUs until the activity's own timeout) → `TrainerStalled`;
 * the caller aborts `stop` (e.g. a checkpoint could not be uploaded) → the abort's reason.
 */
import { accessSync, constants, createWriteStream, type WriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { NON_RETRYABLE_TRAINER_ERRORS, type TrainerEvent } from '../common/contracts';
import { activityContext } from './context';
import { scrubSecrets, secretValues, workerEnv } from './env';
import { accelerateLauncher, gpuPool, gpuShortfall, type MachineRank } from './gpus';
import { freePort } from './net';
import { lastLines, spawnTrainer, TrainerSpawnError, type TrainerExit, type TrainerRun } from './trainerProcess';

export type DoneEvent = Extract<TrainerEvent, { event: 'done' }>;
export type ErrorEvent = Extract<TrainerEvent, { event: 'error' }>;

/** How often the supervisor heartbeats while the trainer runs (the worker throttles further). */
export const HEARTBEAT_EVERY_MS = 5_000;
/** SIGTERM → SIGKILL grace on cancellation (the trainer may be writing a checkpoint). */
const CANCEL_GRACE_MS = 10_000;
/** Grace for stragglers left in the group after the trainer itself has exited, and on a caller's stop. */
const CLEANUP_GRACE_MS = 2_000;

/** How long a trainer may print no event before it is killed as hung. */
export interface StallBound {
  ms: number;
  /** The setting that sets it, for the failure message (`VALUEDRIFT_TRAINER_STALL_SECONDS=1800`). */
  setting: string;
}

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
  /**
   * This node's place in a multi-node group (activities/multinode.ts): launched through accelerate
   * with the group's machine settings, whatever `gpus` is (a 0-GPU stage: one CPU process per node).
   */
  machine?: MachineRank;
  /**
   * A follower of a multi-node group (machine rank > 0): only rank 0 reports progress, checkpoints and
   * `done`, so a follower succeeds on exit code 0 alone (and has no `done` event to return).
   */
  follower?: boolean;
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
  /**
   * A file that gets the trainer's whole stdout and stderr, line by line as they arrive (credential
   * values redacted, at most `TRAINER_LOG_MAX_BYTES`); closed before `afterExit` runs.
   */
  logFile?: string;
  /** Extra environment for the trainer (beside the lease's GPU settings). */
  env?: Record<string, string>;
  /**
   * Kill the trainer when it prints no protocol event (progress, checkpoint, …) for this long, and
   * fail retryably with type `TrainerStalled`. Unset: no bound (e.g. generation, whose events are sparse).
   */
  stall?: StallBound;
  /**
   * Aborting it stops the trainer at once (its group is killed) and fails the run with the abort's
   * reason (an ApplicationFailure as it is; anything else as a retryable `TrainerStopped`).
   */
  stop?: AbortSignal;
}

/** Where a trainer log stops growing (the rest is counted, not kept): bounds disk and upload. */
export const TRAINER_LOG_MAX_BYTES = 256 * 1024 * 1024;

/**
 * The trainer's output as a file, written as it arrives: memory stays bounded whatever the trainer
 * prints. Each line is `stdout| …` or `stderr| …`. A write error (disk full) stops the log, never the run.
 */
export class TrainerLog {
  private readonly out: WriteStream;
  private readonly secrets = secretValues();
  private bytes = 0;
  private dropped = 0;
  private failed: Error | undefined;

  constructor(
    readonly file: string,
    header: readonly string[],
    private readonly maxBytes = TRAINER_LOG_MAX_BYTES,
  ) {
    this.out = createWriteStream(file, { flags: 'w' });
    this.out.on('error', (err) => {
      this.failed ??= err;
    });
    for (const h of header) this.write(`# ${h}\n`);
  }

  line(stream: 'stdout' | 'stderr', text: string): void {
    this.write(`${stream}| ${scrubSecrets(text, this.secrets)}\n`);
  }

  private write(text: string): void {
    if (this.failed) return;
    const size = Buffer.byteLength(text);
    if (this.bytes + size > this.maxBytes) {
      this.dropped++;
      return;
    }
    this.bytes += size;
    this.out.write(text);
  }

  /** Flushes and closes; the error that stopped the log, if one did. */
  async close(): Promise<Error | undefined> {
    if (this.dropped > 0 && !this.failed) this.out.write(`# ${this.dropped} more line(s) not kept: the log reached ${this.maxBytes} bytes\n`);
    await new Promise<void>((resolve) => {
      if (this.out.closed) return resolve();
      this.out.end(() => resolve());
      this.out.once('error', () => resolve());
    });
    return this.failed;
  }
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

/** The failure of a trainer that printed nothing for longer than its bound (retryable: a retry resumes). */
export function stallFailure(what: string, stall: StallBound, last: TrainerEvent | undefined): ApplicationFailure {
  const seen = last ? `the last was ${scrubSecrets(JSON.stringify(last))}` : 'it printed none since it started';
  return ApplicationFailure.retryable(
    `${what}: no event from the trainer for ${Math.round(stall.ms / 1000)} s (${stall.setting}); ${seen}; its process group was killed`,
    'TrainerStalled',
    { stallSeconds: stall.ms / 1000, lastEvent: last ?? null },
  );
}

function stopFailure(what: string, reason: unknown): ApplicationFailure {
  if (reason instanceof ApplicationFailure) return reason;
  const message = reason instanceof Error ? reason.message : String(reason);
  return ApplicationFailure.retryable(`${what}: stopped: ${scrubSecrets(message)}`, 'TrainerStopped');
}

export async function runTrainerCommand(input: TrainerCommandInput & { follower: true }): Promise<DoneEvent | undefined>;
export async function runTrainerCommand(input: TrainerCommandInput): Promise<DoneEvent>;
export async function runTrainerCommand(input: TrainerCommandInput): Promise<DoneEvent | undefined> {
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
  const log = input.logFile
    ? new TrainerLog(input.logFile, [`valuedrift trainer log: ${input.what}`, `started ${new Date().toISOString()}, command ${input.command}`])
    : undefined;
  let logClosed = false;
  const closeLog = async () => {
    if (!log || logClosed) return;
    logClosed = true;
    const err = await log.close();
    if (err) console.warn(`trainer log ${log.file}: ${err.message}; the rest of the output was not kept`);
  };
  try {
    const cfg = path.join(dir, 'config.json');
    await fs.writeFile(cfg, JSON.stringify(input.config, null, 2));
    // A node with fewer GPUs than the job needs (reached through the plain gpu queue): retryable, so
    // that the retry goes to a node that fits, not a failed lineage.
    const short = gpuShortfall(gpus, gpuPool());
    if (short) throw ApplicationFailure.retryable(`${input.what}: ${short}`, 'NotEnoughGpus', { gpus, nodeGpus: gpuPool().size });
    // This node's GPUs are shared by concurrent jobs: lease this run's own, waiting (the timer keeps
    // heartbeating) while others hold them.
    const lease = await gpuPool().acquire(gpus, { signal });
    let run: TrainerRun | undefined;
    let exit: TrainerExit;
    const onCancel = () => void run?.kill(CANCEL_GRACE_MS);
    signal?.addEventListener('abort', onCancel);
    // Why the run was ended early (a stall or the caller's stop), the first one only.
    let ended: ApplicationFailure | undefined;
    const end = (failure: ApplicationFailure, graceMs: number) => {
      if (ended) return;
      ended = failure;
      void run?.kill(graceMs);
    };
    const onStop = () => end(stopFailure(input.what, input.stop?.reason), CLEANUP_GRACE_MS);
    input.stop?.addEventListener('abort', onStop);
    if (input.stop?.aborted) onStop();
    let watchdog: NodeJS.Timeout | undefined;
    const stall = input.stall;
    const resetWatchdog = () => {
      if (!stall) return;
      clearTimeout(watchdog);
      watchdog = setTimeout(() => end(stallFailure(input.what, stall, last), CANCEL_GRACE_MS), stall.ms);
    };
    try {
      signal?.throwIfAborted();
      const launcher = input.machine
        ? accelerateLauncher(Math.max(1, gpus), input.machine.port, input.machine)
        : input.distributed && gpus > 1
          ? accelerateLauncher(gpus, await freePort())
          : undefined;
      try {
        run = await spawnTrainer({
          python: env.python,
          args: [input.command, '--config', cfg],
          launcher,
          env: { ...input.env, ...lease.env },
          onEvent: (e, pid) => {
            last = e;
            resetWatchdog();
            if (e.event === 'done') done = e;
            if (e.event === 'error') error = e;
            input.onEvent?.(e, pid);
          },
          onStrayLine: (l) => stray.push(l),
          onLine: log ? (stream, line) => log.line(stream, line) : undefined,
        });
      } catch (err) {
        throw err instanceof TrainerSpawnError ? spawnFailure(input.what, err) : err;
      }
      signal?.throwIfAborted(); // cancelled while it was starting
      if (ended) void run.kill(CLEANUP_GRACE_MS); // stopped while it was starting
      resetWatchdog(); // the bound counts from the start (model loading included)
      await input.onSpawn?.(run.pid);
      exit = await run.exit;
    } finally {
      clearTimeout(watchdog);
      signal?.removeEventListener('abort', onCancel);
      input.stop?.removeEventListener('abort', onStop);
      try {
        // Nothing the trainer started outlives the run (a no-op when the group is already gone).
        await run?.kill(CLEANUP_GRACE_MS);
      } finally {
        lease.release();
      }
    }

    await closeLog();
    let settleFailed = false;
    let settleError: unknown;
    try {
      await input.afterExit?.();
    } catch (err) {
      settleFailed = true;
      settleError = err;
    }
    signal?.throwIfAborted();
    // A stall or a stop is the cause; what afterExit reports then (uploads cut short) follows from it.
    if (ended) throw ended;
    if (settleFailed) throw settleError;
    if (exit.code === 0 && done) return done;
    if (exit.code === 0 && input.follower && !error) return undefined;
    const extra = stray.length ? `\nunexpected stdout: ${stray.slice(-3).join(' | ')}` : '';
    throw trainerFailure(input.what, error, exit, run.stderrTail() + extra);
  } finally {
    clearInterval(timer);
    await closeLog();
    await fs.rm(dir, { recursive: true, force: true });
  }
}
