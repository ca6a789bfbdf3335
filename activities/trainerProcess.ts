/**
 * Runs the Python trainer as a child process and turns its stdout into typed events.
 *
 * The process gets its own process group (detached) so cancellation can kill it together with
 * anything it started (accelerate workers, dataloader workers). Arguments are always an array;
 * nothing goes through a shell.
 */
import { spawn } from 'node:child_process';
import * as readline from 'node:readline';
import { TrainerEvent } from '../common/contracts';
import { childProcessEnv } from './env';
import { terminateGroup } from './processGroup';

export interface TrainerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface TrainerRun {
  /** Resolves when the process has exited and its stdout has been read to the end. */
  exit: Promise<TrainerExit>;
  pid: number;
  /** The last ~64 KiB of stderr, for failure messages. */
  stderrTail(): string;
  /** SIGTERM to the group, then SIGKILL after `graceMs`; resolves when the group is gone. */
  kill(graceMs?: number): Promise<void>;
}

const TAIL_BYTES = 64 * 1024;

/** The executable could not be started at all (missing, not executable): no process, no group. */
export class TrainerSpawnError extends Error {
  constructor(
    readonly executable: string,
    readonly code: string | undefined,
    cause: Error,
  ) {
    super(`could not start the trainer with ${executable}: ${cause.message}`, { cause });
    this.name = 'TrainerSpawnError';
  }
}

export interface SpawnTrainerOptions {
  python: string;
  args: string[];
  /** Replaces `-m valuedrift_trainer` (e.g. accelerate's launcher for several GPUs). */
  launcher?: string[];
  cwd?: string;
  /** Added to the worker's environment for this child (e.g. a GPU lease's CUDA_VISIBLE_DEVICES). */
  env?: Record<string, string>;
  /** Each event, with the pid (= process group) of the trainer. */
  onEvent: (e: TrainerEvent, pid: number) => void;
  /** Lines on stdout that are not valid events (a protocol breach, kept for the failure message). */
  onStrayLine?: (line: string) => void;
  onStderr?: (chunk: string) => void;
}

/**
 * Starts the trainer. Resolves once the process exists; rejects with a `TrainerSpawnError` when it
 * cannot be started (the `'error'` listener is attached before anything can emit it, so a wrong
 * VALUEDRIFT_PYTHON is an error for the caller, never an unhandled event that ends the worker).
 */
export function spawnTrainer(opts: SpawnTrainerOptions): Promise<TrainerRun> {
  const child = spawn(opts.python, [...(opts.launcher ?? ['-m', 'valuedrift_trainer']), ...opts.args], {
    cwd: opts.cwd,
    env: childProcessEnv({ PYTHONUNBUFFERED: '1', TOKENIZERS_PARALLELISM: 'false', ...opts.env }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    shell: false,
  });
  let tail = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-TAIL_BYTES);
    opts.onStderr?.(chunk);
  });
  const rl = readline.createInterface({ input: child.stdout });
  rl.on('line', (line) => {
    const trimmed = line.trim();
    if (!trimmed) return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(trimmed);
    } catch {
      opts.onStrayLine?.(trimmed);
      return;
    }
    const ev = TrainerEvent.safeParse(parsed);
    if (ev.success) opts.onEvent(ev.data, child.pid as number);
    else opts.onStrayLine?.(trimmed);
  });
  // 'close' follows 'exit' once stdout and stderr are drained, so every event has been delivered.
  const exit = new Promise<TrainerExit>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
  return new Promise<TrainerRun>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) => {
      // Before 'spawn' this means no process was created. After it, only kill()/send() can fail, and
      // neither is used (the group is signalled directly); the listener stays so nothing is unhandled.
      if (child.pid === undefined) reject(new TrainerSpawnError(opts.python, err.code, err));
    });
    child.once('spawn', () => {
      const pid = child.pid as number;
      resolve({
        exit,
        pid,
        stderrTail: () => tail,
        kill: async (graceMs = 10_000) => {
          await terminateGroup(pid, graceMs);
        },
      });
    });
  });
}

/** Last `n` lines of a log tail, for messages that must stay readable. */
export function lastLines(text: string, n = 20): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}
