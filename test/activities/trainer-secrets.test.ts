/**
 * Secrets and the trainer: the trainer's environment is an allow-list (it never talks to S3,
 * Temporal or the judge, so it gets none of their keys), and whatever the trainer prints that ends
 * up in a failure message (kept in workflow history) has every credential value scrubbed. Checked
 * on the pure functions and on a real spawned stand-in trainer through the supervisor.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childProcessEnv, passedToTrainer, resetWorkerEnv, scrubSecrets, secretValues } from '../../activities/env';
import { GpuPool, setGpuPool } from '../../activities/gpus';
import { runTrainerCommand, type TrainerCommandInput } from '../../activities/trainerCommand';

const SECRETS = {
  OPENAI_API_KEY: 'sk-proj-ZZtopSecretOpenAIKey0123456789',
  VALUEDRIFT_JUDGE_API_KEY: 'vdj-judge-key-abcdef0123456789',
  TEMPORAL_API_KEY: 'tmprl-api-key-0123456789abcdef',
  AWS_ACCESS_KEY_ID: 'AKIAIOSFODNN7EXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  AWS_SESSION_TOKEN: 'FwoGZXIvYXdzEBYaDEXAMPLESESSIONTOKEN',
  VALUEDRIFT_S3_SECRET: 'another-secret-for-s3-1234',
  SOME_TOOL_PASSWORD: 'hunter2hunter2',
};
const HF_TOKEN = 'hf_ExampleHubToken0123456789abcdef';

describe('the trainer environment is an allow-list', () => {
  it('passes what Python, torch, CUDA and the hub need, and no other credential', () => {
    const env = childProcessEnv(
      { CUDA_VISIBLE_DEVICES: '1' },
      {
        ...SECRETS,
        HF_TOKEN,
        PATH: '/usr/bin',
        HOME: '/home/x',
        LANG: 'C.UTF-8',
        LC_ALL: 'C.UTF-8',
        TMPDIR: '/scratch',
        HF_HOME: '/hf',
        HF_HUB_OFFLINE: '1',
        PYTHONPATH: '/p',
        NCCL_DEBUG: 'INFO',
        CUDA_HOME: '/cuda',
        PYTORCH_CUDA_ALLOC_CONF: 'expandable_segments:True',
        TOKENIZERS_PARALLELISM: 'false',
        VALUEDRIFT_CACHE: '/cache',
        VALUEDRIFT_S3_ENDPOINT: 'http://127.0.0.1:9000',
        TEMPORAL_ADDRESS: 'localhost:7233',
        AWS_REGION: 'us-east-1',
        DATABASE_URL: 'postgres://u:p@h/db',
        SSH_AUTH_SOCK: '/tmp/agent',
      },
    );
    for (const name of Object.keys(SECRETS)) expect(env[name], name).toBeUndefined();
    for (const name of ['TEMPORAL_ADDRESS', 'AWS_REGION', 'DATABASE_URL', 'SSH_AUTH_SOCK']) expect(env[name], name).toBeUndefined();
    expect(env).toMatchObject({
      HF_TOKEN,
      PATH: '/usr/bin',
      HOME: '/home/x',
      LANG: 'C.UTF-8',
      LC_ALL: 'C.UTF-8',
      TMPDIR: '/scratch',
      HF_HOME: '/hf',
      HF_HUB_OFFLINE: '1',
      PYTHONPATH: '/p',
      NCCL_DEBUG: 'INFO',
      CUDA_HOME: '/cuda',
      CUDA_VISIBLE_DEVICES: '1',
      PYTORCH_CUDA_ALLOC_CONF: 'expandable_segments:True',
      TOKENIZERS_PARALLELISM: 'false',
      VALUEDRIFT_CACHE: '/cache',
      VALUEDRIFT_S3_ENDPOINT: 'http://127.0.0.1:9000',
    });
  });

  it('names credentials by a whole word KEY/SECRET/TOKEN/PASSWORD (TOKENIZERS_* is not one)', () => {
    expect(passedToTrainer('TOKENIZERS_PARALLELISM')).toBe(true);
    expect(passedToTrainer('VLLM_API_KEY')).toBe(false);
    expect(passedToTrainer('HF_TOKEN')).toBe(true);
    expect(passedToTrainer('NODE_OPTIONS')).toBe(false);
  });
});

describe('scrubbing', () => {
  it('replaces every credential value, however often and wherever it appears', () => {
    const secrets = secretValues({ ...SECRETS, HF_TOKEN, PATH: '/usr/bin', SHORT_KEY: 'abc' });
    expect(secrets).toContain(HF_TOKEN);
    expect(secrets).not.toContain('abc'); // too short to be a credential: would blank out words
    expect(secrets).not.toContain('/usr/bin');
    const text = `auth ${SECRETS.OPENAI_API_KEY} failed; env: AWS=${SECRETS.AWS_SECRET_ACCESS_KEY}${SECRETS.AWS_SECRET_ACCESS_KEY} hub=${HF_TOKEN}`;
    const out = scrubSecrets(text, secrets);
    for (const s of [...Object.values(SECRETS), HF_TOKEN]) expect(out).not.toContain(s);
    expect(out).toBe('auth [redacted] failed; env: AWS=[redacted][redacted] hub=[redacted]');
  });
});

describe('a real trainer process', () => {
  let dir: string;
  let script: string;
  const saved: Record<string, string | undefined> = {};

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-trainer-secrets-'));
    // A stand-in trainer that records its environment, then fails loudly printing what it was given.
    script = path.join(dir, 'leaky-trainer.mjs');
    await fs.writeFile(
      script,
      [
        '#!/usr/bin/env node',
        "import { readFileSync, writeFileSync } from 'node:fs';",
        'const a = process.argv.slice(2);',
        "const cfg = JSON.parse(readFileSync(a[a.indexOf('--config') + 1], 'utf8'));",
        'writeFileSync(cfg.envFile, JSON.stringify(process.env));',
        "process.stderr.write('Traceback: auth failed with ' + cfg.leak + '\\n');",
        "process.stdout.write(JSON.stringify({ event: 'error', kind: cfg.kind, message: 'token ' + cfg.leak + ' refused' }) + '\\n');",
        'process.exitCode = 1;',
        '',
      ].join('\n'),
    );
    await fs.chmod(script, 0o755);
    for (const [k, v] of Object.entries({ ...SECRETS, HF_TOKEN, VALUEDRIFT_PYTHON: script })) {
      saved[k] = process.env[k];
      process.env[k] = v;
    }
    resetWorkerEnv();
  });
  afterAll(async () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    resetWorkerEnv();
    setGpuPool(undefined);
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function runLeaky(kind: string): Promise<{ failure: ApplicationFailure; childEnv: Record<string, string> }> {
    setGpuPool(new GpuPool(['0']));
    const envFile = path.join(dir, `env-${kind}.json`);
    const leak = `${SECRETS.AWS_SECRET_ACCESS_KEY} ${SECRETS.OPENAI_API_KEY} ${HF_TOKEN}`;
    const input: TrainerCommandInput = { command: 'train', what: 'leaky job', gpus: 0, config: { envFile, leak, kind } };
    const err = await new MockActivityEnvironment().run((i: TrainerCommandInput) => runTrainerCommand(i), input).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApplicationFailure);
    return { failure: err as ApplicationFailure, childEnv: JSON.parse(await fs.readFile(envFile, 'utf8')) as Record<string, string> };
  }

  for (const kind of ['bad_config', 'transient']) {
    it(`${kind}: the child saw no worker credential, and the failure in history carries none`, async () => {
      const { failure, childEnv } = await runLeaky(kind);
      for (const name of Object.keys(SECRETS)) expect(childEnv[name], name).toBeUndefined();
      expect(childEnv.HF_TOKEN).toBe(HF_TOKEN);
      expect(childEnv.PATH).toBe(process.env.PATH);
      const recorded = JSON.stringify({ message: failure.message, details: failure.details });
      expect(recorded).toContain('[redacted]');
      for (const s of [...Object.values(SECRETS), HF_TOKEN]) expect(recorded).not.toContain(s);
    });
  }
});
