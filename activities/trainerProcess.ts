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
  /**
   * Every line of stdout (events included) and of stderr, in the order they arrive, without the
   * newline; a stderr line longer than `MAX_LINE_CHARS` comes in pieces (memory stays bounded).
   */
  onLine?: (stream: 'stdout' | 'stderr', line: string) => void;
}

/** Longest stderr piece held before it is passed on without its newline. */
export const MAX_LINE_CHARS = 64 * 1024;

/** Splits a stream of text chunks into lines, never holding more than `max` characters. */
export class LineSplitter {
  private buffer = '';
  constructor(
    private readonly emit: (line: string) => void,
    private readonly max = MAX_LINE_CHARS,
  ) {}
  push(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      this.emitPieces(this.buffer.slice(0, nl).replace(/\r$/, ''));
      this.buffer = this.buffer.slice(nl + 1);
    }
    while (this.buffer.length > this.max) {
      this.emit(this.buffer.slice(0, this.max));
      this.buffer = this.buffer.slice(this.max);
    }
  }
  /** The unterminated rest, if any. */
  end(): void {
    if (this.buffer !== '') this.emitPieces(this.buffer);
    this.buffer = '';
  }
  private emitPieces(line: string): void {
    for (let i = 0; i < line.length || i === 0; i += this.max) this.emit(line.slice(i, i + this.max));
  }
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
  const onLine = opts.onLine;
  const stderrLines = onLine ? new LineSplitter((l) => onLine('stderr', l)) : undefined;
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    tail = (tail + chunk).slice(-TAIL_BYTES);
    stderrLines?.push(chunk);
    opts.onStderr?.(chunk);
  });
  child.stderr.on('end', () => stderrLines?.end());
  const rl = readline.createInterface({ input: child.stdout });
  rl.on('line', (line) => {
    onLine?.('stdout', line);
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
