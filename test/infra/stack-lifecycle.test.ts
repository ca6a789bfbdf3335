/**
 * The stack's record file, env file and shutdown order, on a scratch data directory with stand-in
 * processes (`sleep`): no Python, Temporal or S3 needed.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { dataPaths } from '../../infra/paths';
import { groupAlive } from '../../activities/processGroup';
import { processIdentity } from '../../infra/proc';
import { SERVICE } from '../../infra/services/service';
import { parseInfraSettings } from '../../infra/settings';
import { type StackTarget, stackDown, stackStatus } from '../../infra/stack';
import { loadStackEnv, writeStackEnv } from '../../infra/stackEnv';
import { type ServiceRecord, StackRecord } from '../../infra/stackRecord';

const scratch: string[] = [];
const groups: number[] = [];

function scratchDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'valuedrift-stack-'));
  scratch.push(dir);
  return dir;
}

afterEach(() => {
  for (const pgid of groups.splice(0)) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already stopped by the test
    }
  }
  for (const dir of scratch.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** A detached `sleep` leading its own process group, recorded as `name`. */
async function standIn(name: string, logFile: string): Promise<ServiceRecord> {
  const child = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject);
  });
  child.unref();
  const pid = child.pid!;
  groups.push(pid);
  return { name, pid, pgid: pid, identity: processIdentity(pid)!, port: null, startedAt: new Date().toISOString(), cmd: ['sleep', '300'], logFile };
}

describe('stack record file', () => {
  it('is empty when absent, replaces a record by name, drops one, and writes valid JSON', () => {
    const records = new StackRecord(path.join(scratchDir(), 'sub', 'stack.json'));
    expect(records.exists()).toBe(false);
    expect(records.all()).toEqual([]);
    const a: ServiceRecord = { name: 'temporal', pid: 10, pgid: 10, identity: 'x', port: 7233, startedAt: 't', cmd: ['temporal'], logFile: 'l' };
    records.put(a);
    records.put({ ...a, name: 's3', port: 9000 });
    records.put({ ...a, pid: 11, pgid: 11 });
    expect(records.all().map((r) => [r.name, r.pid])).toEqual([
      ['s3', 10],
      ['temporal', 11],
    ]);
    records.drop('s3');
    expect(records.find('s3')).toBeUndefined();
    expect(JSON.parse(fs.readFileSync(records.file, 'utf8'))).toEqual({ services: [{ ...a, pid: 11, pgid: 11 }] });
  });

  it('refuses a file that is not a stack record, saying what to do', () => {
    const file = path.join(scratchDir(), 'stack.json');
    fs.writeFileSync(file, '{"services": [{"name": 1}]}');
    expect(() => new StackRecord(file).all()).toThrow(/is not a stack record .*stop its processes by hand and delete it/);
    fs.writeFileSync(file, 'not json');
    expect(() => new StackRecord(file).all()).toThrow(/is not JSON/);
  });
});

describe('stack env file', () => {
  it('round-trips KEY=VALUE lines (values may hold "=") and skips comments', () => {
    const file = path.join(scratchDir(), 'stack.env');
    const env = { TEMPORAL_ADDRESS: '127.0.0.1:7300', VALUEDRIFT_S3_ENDPOINT: 'http://127.0.0.1:9300', X: 'a=b' };
    writeStackEnv(file, env);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^# Written by infra\/stack\.ts/);
    expect(loadStackEnv(file)).toEqual(env);
  });

  it('says how to start the stack when the file is absent, and names a malformed line', () => {
    const dir = scratchDir();
    expect(() => loadStackEnv(path.join(dir, 'stack.env'))).toThrow(/not found: the local stack is not up \(run `npm run dev:up`\)/);
    fs.writeFileSync(path.join(dir, 'bad.env'), 'OK=1\nno equals sign\n');
    expect(() => loadStackEnv(path.join(dir, 'bad.env'))).toThrow(/malformed line "no equals sign"/);
  });
});

describe('stackDown on a scratch data directory', () => {
  function target(): StackTarget {
    const dir = scratchDir();
    // Ports nobody listens on: stackStatus probes them.
    return { settings: parseInfraSettings({ VALUEDRIFT_DATA_DIR: dir, VALUEDRIFT_TEMPORAL_PORT: '1', VALUEDRIFT_S3_PORT: '2' }), data: dataPaths(dir) };
  }

  it('stops clients before the services they use, companions after their owner, and removes stack.env', async () => {
    const t = target();
    const records = new StackRecord(t.data.stackFile);
    // Recorded in start order; one name no service owns (an older stack's).
    for (const name of [SERVICE.temporal, SERVICE.s3, SERVICE.judge, SERVICE.judgeServer, SERVICE.workerCpu, SERVICE.workerGpu, 'legacy']) {
      records.put(await standIn(name, t.data.logFileFor(name)));
    }
    writeStackEnv(t.data.stackEnvFile, { A: '1' });
    const pgids = records.all().map((r) => r.pgid);
    expect((await stackStatus({ target: t })).every((s) => s.alive)).toBe(true);

    const lines: string[] = [];
    const stopped = await stackDown({ target: t, log: (l) => lines.push(l) });
    expect(stopped).toEqual(['legacy', SERVICE.workerGpu, SERVICE.workerCpu, SERVICE.judge, SERVICE.judgeServer, SERVICE.s3, SERVICE.temporal]);
    expect(lines.map((l) => l.split(':')[0])).toEqual(stopped);
    for (const pgid of pgids) expect(groupAlive(pgid), `group ${pgid} stopped`).toBe(false);
    expect(records.all()).toEqual([]);
    expect(fs.existsSync(t.data.stackEnvFile)).toBe(false);
  }, 60_000);

  it('`only` stops the named services with their companions and leaves the rest running', async () => {
    const t = target();
    const records = new StackRecord(t.data.stackFile);
    for (const name of [SERVICE.temporal, SERVICE.judge, SERVICE.judgeServer]) records.put(await standIn(name, t.data.logFileFor(name)));
    writeStackEnv(t.data.stackEnvFile, { A: '1' });

    expect(await stackDown({ target: t, only: [SERVICE.judge], log: () => undefined })).toEqual([SERVICE.judge, SERVICE.judgeServer]);
    const left = records.all();
    expect(left.map((r) => r.name)).toEqual([SERVICE.temporal]);
    expect(groupAlive(left[0]!.pgid)).toBe(true);
    expect(fs.existsSync(t.data.stackEnvFile)).toBe(true);
  }, 60_000);

  it('leaves alone a recorded pid that now belongs to another process', async () => {
    const t = target();
    const records = new StackRecord(t.data.stackFile);
    const impostor = await standIn(SERVICE.s3, t.data.logFileFor(SERVICE.s3));
    records.put({ ...impostor, identity: 'some-earlier-process' });
    const lines: string[] = [];
    await stackDown({ target: t, log: (l) => lines.push(l) });
    expect(lines.join('\n')).toMatch(/s3: pid \d+ now belongs to another process; left alone/);
    expect(groupAlive(impostor.pgid)).toBe(true);
  }, 60_000);
});
