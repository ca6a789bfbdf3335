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

export interface TrainerRun {
  /** Resolves when the process exits. */
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  pid: number;
  /** The last ~64 KiB of stderr, for failure messages. */
  stderrTail(): string;
  /** SIGTERM to the group, then SIGKILL after `graceMs`. */
  kill(graceMs?: number): Promise<void>;
}

const TAIL_BYTES = 64 * 1024;

export function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

export function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface SpawnTrainerOptions {
  python: string;
  args: string[];
  /** Replaces `-m valuedrift_trainer` (e.g. accelerate's launcher for several GPUs). */
  launcher?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  onEvent: (e: TrainerEvent) => void;
  /** Lines on stdout that are not valid events (a protocol breach, kept for the failure message). */
  onStrayLine?: (line: string) => void;
  onStderr?: (chunk: string) => void;
}

export function spawnTrainer(opts: SpawnTrainerOptions): TrainerRun {
  const child = spawn(opts.python, [...(opts.launcher ?? ['-m', 'valuedrift_trainer']), ...opts.args], {
    cwd: opts.cwd,
    env: { ...process.env, PYTHONUNBUFFERED: '1', TOKENIZERS_PARALLELISM: 'false', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    shell: false,
  });
  if (child.pid === undefined) throw new Error(`could not start ${opts.python}`);
  const pid = child.pid;
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
    if (ev.success) opts.onEvent(ev.data);
    else opts.onStrayLine?.(trimmed);
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  return {
    exit,
    pid,
    stderrTail: () => tail,
    kill: async (graceMs = 10_000) => {
      killGroup(pid, 'SIGTERM');
      const deadline = Date.now() + graceMs;
      while (groupAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      if (groupAlive(pid)) killGroup(pid, 'SIGKILL');
      // Wait for the group to be reaped so no trainer outlives the activity.
      const hard = Date.now() + 5_000;
      while (groupAlive(pid) && Date.now() < hard) await new Promise((r) => setTimeout(r, 50));
    },
  };
}

/** Last `n` lines of a log tail, for messages that must stay readable. */
export function lastLines(text: string, n = 20): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}
