/**
 * The runner of built datasets' Python steps (activities/derived/python.ts), on a real Python
 * process: the child sees only the allow-listed environment (no judge, generator, S3 or OpenAI key;
 * the hub token and our own settings pass), a bad-input error event fails non-retryably, any other
 * failure retryably with the secret scrubbed from the message.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDerivedStep } from '../../activities/derived/python';
import { restoreEnv } from '../support/workflowEnv';

const PYTHON = path.resolve('.venv/bin/python');
const KEYS = ['PYTHONPATH', 'OPENAI_API_KEY', 'VALUEDRIFT_JUDGE_API_KEY', 'VALUEDRIFT_GENERATOR_API_KEY', 'AWS_SECRET_ACCESS_KEY', 'HF_TOKEN', 'VALUEDRIFT_EMBEDDER'];
const saved = { ...process.env };
let dir: string;

const SCRIPT = `
import json, os, sys
mode, out = sys.argv[1], sys.argv[2]
with open(out, "w") as f:
    json.dump(dict(os.environ), f)
if mode == "bad":
    print(json.dumps({"event": "error", "kind": "bad_input", "message": "row 3: no prompt"}))
    sys.exit(2)
if mode == "crash":
    sys.stderr.write("failed talking to " + os.environ.get("LEAK", "sk-live-judge-0123456789abcdef") + "\\n")
    sys.exit(1)
`;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-derived-py-'));
  await fs.writeFile(path.join(dir, 'envdump.py'), SCRIPT);
  Object.assign(process.env, {
    PYTHONPATH: dir,
    OPENAI_API_KEY: 'sk-live-openai-0123456789abcdef',
    VALUEDRIFT_JUDGE_API_KEY: 'sk-live-judge-0123456789abcdef',
    VALUEDRIFT_GENERATOR_API_KEY: 'sk-live-generator-0123456789abcdef',
    AWS_SECRET_ACCESS_KEY: 'aws-secret-0123456789abcdef',
    HF_TOKEN: 'hf_token_0123456789abcdef',
    VALUEDRIFT_EMBEDDER: 'minilm',
  });
});
afterAll(async () => {
  restoreEnv(saved, KEYS);
  await fs.rm(dir, { recursive: true, force: true });
});

const step = (mode: string, out: string) => ({ args: ['envdump', mode, out], what: 'test step', badInput: ['bad_input'], failureType: 'TestStepFailed' });

describe('runDerivedStep', () => {
  it('passes the allow-listed environment only', async () => {
    const out = path.join(dir, 'ok.json');
    await runDerivedStep(PYTHON, step('ok', out), undefined);
    const env = JSON.parse(await fs.readFile(out, 'utf8')) as Record<string, string>;
    for (const k of ['OPENAI_API_KEY', 'VALUEDRIFT_JUDGE_API_KEY', 'VALUEDRIFT_GENERATOR_API_KEY', 'AWS_SECRET_ACCESS_KEY']) expect(env[k], k).toBeUndefined();
    expect(env.HF_TOKEN).toBe('hf_token_0123456789abcdef');
    expect(env.VALUEDRIFT_EMBEDDER).toBe('minilm');
    expect(env.TOKENIZERS_PARALLELISM).toBe('false');
  });

  it('fails non-retryably on a bad-input event, retryably otherwise, with secrets scrubbed', async () => {
    const bad = await runDerivedStep(PYTHON, step('bad', path.join(dir, 'b.json')), undefined).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(ApplicationFailure);
    expect((bad as ApplicationFailure).nonRetryable).toBe(true);
    expect((bad as ApplicationFailure).message).toBe('test step: row 3: no prompt');
    const crash = await runDerivedStep(PYTHON, step('crash', path.join(dir, 'c.json')), undefined).catch((e: unknown) => e);
    expect(crash).toBeInstanceOf(ApplicationFailure);
    expect((crash as ApplicationFailure).nonRetryable).toBe(false);
    expect((crash as ApplicationFailure).type).toBe('TestStepFailed');
    expect((crash as ApplicationFailure).message).toMatch(/^test step failed: failed talking to /);
    expect((crash as ApplicationFailure).message).not.toContain('sk-live-judge-0123456789abcdef');
  });
});
