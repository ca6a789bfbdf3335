/**
 * Runs the local judge as a long-lived process for the stack: `startLocalJudge` (the judge's own
 * code, infra/judge/serve.ts) serves from inside the calling process and would die with `dev:up`,
 * so the stack starts this file detached instead and stops it with SIGTERM to its process group.
 *
 * startLocalJudge puts the judge server (stance_server.py: minilm-stance, or SmolLM2 through its
 * causal-LM backend) in a process group of its own; this process writes that group's pid to --pid-file so that
 * the stack records it too, and can stop it even if this wrapper died without cleaning up.
 *
 * --kind picks the server (minilm | smollm2); without it VALUEDRIFT_LOCAL_JUDGE does (default minilm).
 *
 *   npx tsx infra/judge-process.ts --kind minilm --host 127.0.0.1 --port 8088 --python .venv/bin/python --pid-file .data/judge-server.pid
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';

import { LOCAL_JUDGE_KINDS, parseLocalJudgeKind } from './judge/kinds';
import { startLocalJudge } from './judge/serve';
import { settings } from './settings';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kind: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      python: { type: 'string' },
      'pid-file': { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  });
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--port must be a port number, got ${values.port}`);
  // The judge server has no authentication: it binds loopback only.
  if (values.host !== '127.0.0.1') throw new Error(`--host must be 127.0.0.1, got ${values.host}`);
  if (values.python === undefined || values['pid-file'] === undefined) throw new Error('--python and --pid-file are required');
  const pidFile = values['pid-file'];
  const kind = values.kind === undefined ? settings.localJudgeKind : parseLocalJudgeKind(values.kind, '--kind');

  // The other local judge is offered too, loaded on its first request (stack.env's VALUEDRIFT_JUDGE_SERVED_MODELS).
  const judge = await startLocalJudge({ kind, host: values.host, port, python: values.python, also: LOCAL_JUDGE_KINDS });
  fs.writeFileSync(pidFile, `${judge.pid}\n`);
  console.log(`judge: serving ${judge.models.join(', ')} (${judge.kind} loaded, the others on first use) at ${judge.baseURL} (server pid ${judge.pid}, model ${judge.modelPath})`);

  let stopping = false;
  const shutdown = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    console.log(`judge: ${signal}, stopping the server`);
    judge
      .stop()
      .then(() => {
        fs.rmSync(pidFile, { force: true });
        process.exit(0);
      })
      .catch((err: unknown) => {
        console.error('judge: stop failed', err);
        process.exit(1);
      });
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  // Lives until signalled, whatever startLocalJudge keeps open.
  setInterval(() => undefined, 1 << 30);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? (err.stack ?? err.message) : err);
  process.exit(1);
});
