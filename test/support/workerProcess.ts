/**
 * Worker processes for end-to-end tests: `worker/main.ts` run by node with tsx's loader in-process
 * (not the tsx CLI, which would run the worker as a grandchild that survives a SIGKILL), an argument
 * array and no shell, stderr's tail printed if it exits with an error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');

export interface WorkerProcesses {
  /** Starts a worker with this process's environment overlaid by `env`. */
  start(tag: string, env: NodeJS.ProcessEnv): ChildProcess;
  /** SIGKILLs every worker still running and waits for each to exit. */
  killAll(): Promise<void>;
}

/** SIGKILLs a process (if it still runs) and resolves once it has exited. */
export async function killProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

export function workerProcesses(): WorkerProcesses {
  const started: ChildProcess[] = [];
  return {
    start(tag, env) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'worker/main.ts'], {
        cwd: ROOT,
        env: { ...process.env, HF_HUB_OFFLINE: '1', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
        shell: false,
      });
      let err = '';
      child.stderr?.on('data', (c: Buffer) => (err = (err + c.toString()).slice(-4000)));
      child.on('exit', (code, sig) => {
        if (code && code !== 0) console.error(`[worker ${tag}] exited ${code ?? sig}: ${err}`);
      });
      started.push(child);
      return child;
    },
    async killAll() {
      for (const child of started) await killProcess(child);
    },
  };
}
