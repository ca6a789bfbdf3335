/**
 * The stack's environment file (`<data dir>/stack.env`, KEY=VALUE lines): what a worker, the CLI or
 * a test needs to reach the local stack. Written by `stackUp`, read with `loadStackEnv`.
 */
import fs from 'node:fs';
import path from 'node:path';

import { LOCAL_JUDGE_MODELS } from './judge/kinds';
import { DATA } from './paths';
import type { PythonEnv } from './python';
import type { InfraSettings } from './settings';

/** The environment a worker, the CLI or a test needs to use the local stack. */
export function stackEnvironment(s: InfraSettings, py: PythonEnv, workDir: string): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: s.temporalAddress,
    TEMPORAL_NAMESPACE: s.temporalNamespace,
    TEMPORAL_UI_URL: s.temporalUiUrl,
    VALUEDRIFT_S3_ENDPOINT: s.s3Endpoint,
    VALUEDRIFT_S3_BUCKET: s.s3Bucket,
    VALUEDRIFT_S3_REGION: s.s3Region,
    VALUEDRIFT_S3_FORCE_PATH_STYLE: 'true',
    AWS_ACCESS_KEY_ID: s.s3AccessKeyId,
    AWS_SECRET_ACCESS_KEY: s.s3SecretAccessKey,
    VALUEDRIFT_JUDGE_BASE_URL: s.judgeBaseUrl,
    VALUEDRIFT_JUDGE_MODEL: s.judgeModel,
    // The stack's judge answers to every local judge's name: a spec naming one is judged by it, not overridden.
    VALUEDRIFT_JUDGE_SERVED_MODELS: Object.values(LOCAL_JUDGE_MODELS).join(','),
    VALUEDRIFT_JUDGE_API_KEY: s.localJudgeApiKey,
    VALUEDRIFT_PYTHON: py.python,
    VALUEDRIFT_TEMPORAL_BIN: py.temporalBin,
    VALUEDRIFT_TEST_SERVER_BIN: py.testServerBin,
    // The stack's workers keep their scratch files in its data directory (a second stack, its own).
    VALUEDRIFT_WORK_DIR: workDir,
  };
}

export function writeStackEnv(file: string, env: Record<string, string>): void {
  const lines = [
    '# Written by infra/stack.ts (npm run dev:up / npm test): how to reach the local stack.',
    ...Object.entries(env).map(([key, value]) => `${key}=${value}`),
  ];
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
}

/** Reads a stack.env file (default: this process's data directory's). Throws, saying how to start the stack, when absent. */
export function loadStackEnv(file: string = DATA.stackEnvFile): Record<string, string> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new Error(`${file} not found: the local stack is not up (run \`npm run dev:up\`)`);
  }
  const env: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${file}: malformed line ${JSON.stringify(raw)}`);
    env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}
