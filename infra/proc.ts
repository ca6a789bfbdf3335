/**
 * Process helpers for the local stack. Every process is spawned from an argument array, never
 * through a shell, so no path or value is ever re-parsed as shell syntax.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { groupAlive, killGroup } from '../activities/processGroup';

export type LogFn = (line: string) => void;

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunCommandOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Killed (SIGKILL) after this long; the result then has `signal: 'SIGKILL'`. */
  timeoutMs?: number;
  /** Called with each complete line of stdout and stderr as it arrives. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Keep at most this many characters of each stream in the result (the tail); 0 keeps none. */
  keepChars?: number;
}

/** Runs a command to completion and collects its output. Never rejects on a non-zero exit. */
export function runCommand(cmd: string, args: readonly string[], opts: RunCommandOptions = {}): Promise<CommandResult> {
  const keep = opts.keepChars ?? 1_000_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? { ...process.env },
      shell: false,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = { stdout: '', stderr: '' };
    const partial = { stdout: '', stderr: '' };
    const collect = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      out[stream] = keep > 0 ? (out[stream] + text).slice(-keep) : '';
      if (opts.onLine) {
        const lines = (partial[stream] + text).split(/\r?\n/);
        partial[stream] = lines.pop() ?? '';
        for (const line of lines) opts.onLine(line, stream);
      }
    };
    child.stdout.on('data', collect('stdout'));
    child.stderr.on('data', collect('stderr'));
    const timer =
      opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (opts.onLine) {
        for (const stream of ['stdout', 'stderr'] as const) {
          if (partial[stream] !== '') opts.onLine(partial[stream], stream);
        }
      }
      resolve({ code, signal, ...out });
    });
  });
}

export interface DetachedSpec {
  cmd: string;
  args: readonly string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  logFile: string;
}

/**
 * Starts a process in its own process group (so that it outlives us and can be stopped as a whole,
 * children included) with stdout and stderr appended to `logFile`.
 */
export function spawnDetached(spec: DetachedSpec): Promise<number> {
  const fd = fs.openSync(spec.logFile, 'a');
  try {
    fs.writeSync(fd, `\n===== ${new Date().toISOString()} starting: ${[spec.cmd, ...spec.args].join(' ')}\n`);
    const child = spawn(spec.cmd, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      shell: false,
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    return new Promise((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => {
        child.unref();
        if (child.pid === undefined) reject(new Error(`spawn of ${spec.cmd} returned no pid`));
        else resolve(child.pid);
      });
    });
  } finally {
    // The child has its own copy of the descriptor.
    fs.closeSync(fd);
  }
}

function readProcStat(pid: number): { state: string; pgrp: number; startTicks: string } | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself contain spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const pgrp = Number(fields[2]);
  const startTicks = fields[19];
  if (state === undefined || startTicks === undefined || !Number.isInteger(pgrp)) return null;
  return { state, pgrp, startTicks };
}

let bootIdCache: string | undefined;
function bootId(): string {
  if (bootIdCache === undefined) {
    try {
      bootIdCache = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      bootIdCache = 'unknown-boot';
    }
  }
  return bootIdCache;
}

/**
 * A string that identifies one process instance: the same pid reused later by another process
 * gives a different identity. Linux: boot id + start time in clock ticks; elsewhere `ps` start time.
 * `null` when the process does not exist (or is a zombie).
 */
export function processIdentity(pid: number): string | null {
  if (process.platform === 'linux') {
    const stat = readProcStat(pid);
    if (stat === null || stat.state === 'Z' || stat.state === 'X') return null;
    return `${bootId()}:${stat.startTicks}`;
  }
  const ps = spawnSync('ps', ['-o', 'lstart=', '-p', String(pid)], { encoding: 'utf8', shell: false });
  const started = ps.status === 0 ? ps.stdout.trim() : '';
  return started === '' ? null : `ps:${started}`;
}

/**
 * The process group of `pid`: a number on Linux, null when the process does not exist, undefined
 * where this cannot be read (no /proc).
 */
export function processGroupOf(pid: number): number | null | undefined {
  if (process.platform !== 'linux') return undefined;
  const stat = readProcStat(pid);
  return stat === null || stat.state === 'Z' ? null : stat.pgrp;
}

export interface OwnedGroup {
  pid: number;
  pgid: number;
  /** `processIdentity(pid)` taken right after the spawn. */
  identity: string;
}

/**
 * Whether process group `pgid` is still the one we started. While any member of a group is alive
 * its id cannot be handed to a new process, so: if the leader is alive it must be our leader (same
 * identity); if it has exited, members left in the group are our leader's children.
 */
export function ownsGroup(group: OwnedGroup): boolean {
  const leader = processIdentity(group.pgid);
  if (leader !== null) return group.pgid !== group.pid || leader === group.identity;
  return groupAlive(group.pgid);
}

/** Whether the recorded process itself (not just its group) is alive and is the one we started. */
export function recordedProcessAlive(group: OwnedGroup): boolean {
  return processIdentity(group.pid) === group.identity;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Stops a process group we started: SIGTERM, then SIGKILL after `graceMs`. Does nothing (returns
 * 'not-ours') when the group id now belongs to someone else.
 */
export async function stopGroup(group: OwnedGroup, graceMs: number): Promise<'stopped' | 'killed' | 'gone' | 'not-ours'> {
  if (!groupAlive(group.pgid)) return 'gone';
  if (!ownsGroup(group)) return 'not-ours';
  if (!killGroup(group.pgid, 'SIGTERM')) return 'gone';
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!groupAlive(group.pgid)) return 'stopped';
    await sleep(100);
  }
  if (!ownsGroup(group)) return 'stopped';
  if (!killGroup(group.pgid, 'SIGKILL')) return 'stopped';
  for (let i = 0; i < 50 && groupAlive(group.pgid); i += 1) await sleep(100);
  return 'killed';
}

/** Whether something accepts TCP connections on host:port. */
export function portOpen(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (open: boolean) => {
      socket.removeAllListeners();
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Polls `check` until it returns true. `abort` is polled too: when it returns a message (e.g. the
 * process died) waiting stops at once with that message.
 */
export async function waitUntil(
  check: () => Promise<boolean>,
  opts: { timeoutMs: number; intervalMs?: number; abort?: () => string | null },
): Promise<{ ok: true } | { ok: false; reason: string }> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const aborted = opts.abort?.() ?? null;
    if (aborted !== null) return { ok: false, reason: aborted };
    if (await check()) return { ok: true };
    if (Date.now() >= deadline) return { ok: false, reason: `not ready after ${Math.round(opts.timeoutMs / 1000)} s` };
    await sleep(opts.intervalMs ?? 250);
  }
}

/** The last `lines` lines of a log file, for error messages. */
export function tailFile(file: string, lines = 20): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.split('\n').slice(-lines - 1).join('\n').trimEnd();
  } catch {
    return '(no log)';
  }
}

/**
 * Runs `fn` holding an exclusive lock file (created with O_EXCL, holding our pid). A lock left by a
 * process that has died is taken over; a live holder is waited for, up to `timeoutMs`.
 */
export async function withFileLock<T>(
  lockFile: string,
  opts: { timeoutMs: number; what: string; log?: LogFn },
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + opts.timeoutMs;
  const me = `${process.pid}:${processIdentity(process.pid) ?? ''}`;
  let announced = false;
  for (;;) {
    try {
      fs.writeFileSync(lockFile, me, { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = '';
    try {
      holder = fs.readFileSync(lockFile, 'utf8');
    } catch {
      continue; // released between our attempt and the read
    }
    const [pidText, ...identityParts] = holder.split(':');
    const pid = Number(pidText);
    const identity = identityParts.join(':');
    const current = Number.isInteger(pid) && pid > 0 ? processIdentity(pid) : null;
    const holderAlive = current !== null && (identity === '' || current === identity);
    if (!holderAlive) {
      fs.rmSync(lockFile, { force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new Error(`${opts.what}: another process (pid ${pid}) holds ${lockFile}; gave up waiting`);
    }
    if (!announced) {
      opts.log?.(`${opts.what}: waiting for pid ${pid}, which holds ${lockFile}`);
      announced = true;
    }
    await sleep(500);
  }
  try {
    return await fn();
  } finally {
    try {
      if (fs.readFileSync(lockFile, 'utf8') === me) fs.rmSync(lockFile, { force: true });
    } catch {
      // already gone
    }
  }
}
