/**
 * The infra scripts' settings (infra/settings.ts): defaults, overrides, and errors that name the
 * variable. Pure: parses the environments given here, never this process's.
 */
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { DEFAULT_S3_BUCKET, DEFAULT_S3_REGION, DEFAULT_TEMPORAL_ADDRESS, DEFAULT_TEMPORAL_NAMESPACE } from '../../common/defaults';
import { LOCAL_JUDGE_MODELS } from '../../infra/judge/kinds';
import { dataPaths } from '../../infra/paths';
import { DEFAULT_CHROMIUM, REPO_ROOT, parseInfraSettings } from '../../infra/settings';

describe('infra settings', () => {
  it('defaults: the local stack on its usual ports, under <repo>/.data, sharing the worker defaults', () => {
    const s = parseInfraSettings({});
    expect(s.dataDir).toBe(path.join(REPO_ROOT, '.data'));
    expect(s.temporalAddress).toBe(DEFAULT_TEMPORAL_ADDRESS);
    expect(s.temporalNamespace).toBe(DEFAULT_TEMPORAL_NAMESPACE);
    expect(s.temporalUiUrl).toBe('http://127.0.0.1:8233');
    expect(s.s3Endpoint).toBe('http://127.0.0.1:9000');
    expect(s.s3Bucket).toBe(DEFAULT_S3_BUCKET);
    expect(s.s3Region).toBe(DEFAULT_S3_REGION);
    expect(s.judgeBaseUrl).toBe('http://127.0.0.1:8088/v1');
    expect(s.localJudgeKind).toBe('minilm');
    expect(s.judgeModel).toBe('minilm-stance');
    expect(s.chromium).toBe(DEFAULT_CHROMIUM);
    expect(s.judgeApiKey).toBeUndefined();
  });

  it('empty values count as unset', () => {
    const s = parseInfraSettings({ VALUEDRIFT_TEMPORAL_PORT: '', VALUEDRIFT_LOCAL_JUDGE: ' ', VALUEDRIFT_DATA_DIR: '' });
    expect(s.temporalPort).toBe(7233);
    expect(s.localJudgeKind).toBe('minilm');
    expect(s.dataDir).toBe(path.join(REPO_ROOT, '.data'));
  });

  it('moves a second stack: ports, data directory, and every derived address', () => {
    const s = parseInfraSettings({
      VALUEDRIFT_DATA_DIR: '/tmp/stack-two',
      VALUEDRIFT_TEMPORAL_PORT: '7300',
      VALUEDRIFT_TEMPORAL_UI_PORT: '8300',
      VALUEDRIFT_S3_PORT: '9300',
      VALUEDRIFT_JUDGE_PORT: '8388',
      VALUEDRIFT_S3_BUCKET: 'other-bucket',
    });
    expect(s.temporalAddress).toBe('127.0.0.1:7300');
    expect(s.temporalUiUrl).toBe('http://127.0.0.1:8300');
    expect(s.s3Endpoint).toBe('http://127.0.0.1:9300');
    expect(s.judgeBaseUrl).toBe('http://127.0.0.1:8388/v1');
    expect(s.s3Bucket).toBe('other-bucket');
    const files = dataPaths(s.dataDir);
    expect(files.stackFile).toBe('/tmp/stack-two/stack.json');
    expect(files.stackEnvFile).toBe('/tmp/stack-two/stack.env');
    expect(files.temporalDbFile).toBe('/tmp/stack-two/temporal/temporal.db');
    expect(files.logFileFor('s3')).toBe('/tmp/stack-two/logs/s3.log');
  });

  it('a relative data directory is resolved against the current directory', () => {
    expect(parseInfraSettings({ VALUEDRIFT_DATA_DIR: 'rel/dir' }).dataDir).toBe(path.resolve('rel/dir'));
  });

  it('rejects a port that is not one, naming the variable and the value', () => {
    for (const bad of ['0', '65536', 'abc', '72.5', '-1']) {
      expect(() => parseInfraSettings({ VALUEDRIFT_S3_PORT: bad })).toThrow(new RegExp(`^VALUEDRIFT_S3_PORT="${bad.replace('.', '\\.')}": `));
    }
  });

  it('VALUEDRIFT_LOCAL_JUDGE picks the judge and its model name; anything else fails naming the choices', () => {
    expect(parseInfraSettings({ VALUEDRIFT_LOCAL_JUDGE: 'smollm2' })).toMatchObject({ localJudgeKind: 'smollm2', judgeModel: 'smollm2-judge' });
    expect(parseInfraSettings({ VALUEDRIFT_LOCAL_JUDGE: 'minilm' })).toMatchObject({ localJudgeKind: 'minilm', judgeModel: 'minilm-stance' });
    for (const bad of ['llama', 'SmolLM2', 'minilm-stance', 'gpt-4o']) {
      expect(() => parseInfraSettings({ VALUEDRIFT_LOCAL_JUDGE: bad })).toThrow(/VALUEDRIFT_LOCAL_JUDGE=.*expected one of minilm, smollm2/);
    }
    expect(LOCAL_JUDGE_MODELS).toEqual({ smollm2: 'smollm2-judge', minilm: 'minilm-stance' });
  });

  it('refuses a host other than loopback: the stack has no authentication', () => {
    expect(parseInfraSettings({ VALUEDRIFT_LOCAL_HOST: '127.0.0.2' }).temporalAddress).toBe('127.0.0.2:7233');
    for (const bad of ['0.0.0.0', '192.168.1.5', 'example.com']) {
      expect(() => parseInfraSettings({ VALUEDRIFT_LOCAL_HOST: bad })).toThrow(/^VALUEDRIFT_LOCAL_HOST=".*": the local stack listens on loopback only/);
    }
  });

  it('a bucket name too short for S3 fails', () => {
    expect(() => parseInfraSettings({ VALUEDRIFT_S3_BUCKET: 'ab' })).toThrow(/^VALUEDRIFT_S3_BUCKET="ab": /);
  });
});
