/**
 * The GPU node's model cache (activities/models.ts localModel + activities/modelCache.ts) against the
 * local stack's S3 server, with real downloads of small stored checkpoints:
 * - across 10 evaluations' worth of model downloads with a limit that fits 3 models, the cache is
 *   within its limit after every download and holds exactly the 3 most recently used models;
 * - a model in use is not evicted even when the cache is over its limit (which is logged), and goes
 *   once released;
 * - a re-request of an evicted model downloads it again, verified file by file;
 * - many requests at once, from this process and from a second worker process sharing the work
 *   dir, with evictions going on, all get a complete, verified model folder.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ModelHandle } from '../../common/contracts';
import { parseWorkerEnv, REPO_ROOT, resetWorkerEnv } from '../../activities/env';
import { cacheEntries, cacheLog } from '../../activities/modelCache';
import { localModel, type LocalModel } from '../../activities/models';
import { sha256Hex, uploadDir } from '../../activities/store';
import { loadStackEnv, uniqueName } from '../support/workflowEnv';

const execFileAsync = promisify(execFile);

interface StoredModel {
  handle: ModelHandle;
  files: Record<string, Buffer>;
  key: string;
}

let tmp: string;
const models: StoredModel[] = [];
/** Bytes one model's folder takes in the cache: its weights files plus downloadDir's completion marker. */
let modelBytes = 0;
const logs: { level: 'info' | 'warn'; msg: string }[] = [];
const { info, warn } = cacheLog;

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-model-cache-'));
  cacheLog.info = (msg) => logs.push({ level: 'info', msg });
  cacheLog.warn = (msg) => logs.push({ level: 'warn', msg });
  // 10 distinct small checkpoints (random weights), with optimizer state that is never downloaded.
  const run = uniqueName('cache');
  for (let i = 0; i < 10; i++) {
    const src = path.join(tmp, 'src', String(i));
    await fs.mkdir(path.join(src, 'sub'), { recursive: true });
    const files: Record<string, Buffer> = {
      'config.json': Buffer.from(JSON.stringify({ model_type: 'llama', i })),
      'model.safetensors': randomBytes(300 * 1024),
      'sub/tokenizer.json': randomBytes(20 * 1024),
    };
    for (const [rel, body] of Object.entries(files)) await fs.writeFile(path.join(src, rel), body);
    await fs.writeFile(path.join(src, 'optimizer.pt'), randomBytes(50 * 1024));
    const { manifest } = await uploadDir(`test/model-cache/${run}/m${i}`, src);
    models.push({ handle: { uri: `s3://x/m${i}`, manifest, contentKey: manifest.sha256 }, files, key: manifest.sha256.slice(0, 32) });
  }
}, 180_000);

afterAll(async () => {
  cacheLog.info = info;
  cacheLog.warn = warn;
  delete process.env.VALUEDRIFT_MODEL_CACHE_BYTES;
  delete process.env.VALUEDRIFT_WORK_DIR;
  resetWorkerEnv();
  await fs.rm(tmp, { recursive: true, force: true });
});

afterEach(() => {
  logs.length = 0;
});

/** A fresh work dir and a cache limit of `limit` bytes for this worker process. */
async function useWorkDir(name: string, limit: number): Promise<string> {
  const work = path.join(tmp, name);
  process.env.VALUEDRIFT_WORK_DIR = work;
  process.env.VALUEDRIFT_MODEL_CACHE_BYTES = String(limit);
  resetWorkerEnv();
  return path.join(work, 'models');
}

/** Checks every weights file of a model folder against what was uploaded. */
async function verify(m: StoredModel, dir: string): Promise<void> {
  for (const [rel, body] of Object.entries(m.files)) expect(sha256Hex(await fs.readFile(path.join(dir, rel)))).toBe(sha256Hex(body));
  await expect(fs.access(path.join(dir, 'optimizer.pt'))).rejects.toThrow();
}

async function cacheState(root: string): Promise<{ keys: string[]; total: number }> {
  const entries = await cacheEntries(root);
  return { keys: entries.map((e) => e.key).sort(), total: entries.reduce((a, e) => a + e.bytes, 0) };
}

describe('VALUEDRIFT_MODEL_CACHE_BYTES', () => {
  it('defaults to 200 GiB, takes a whole number of bytes and refuses anything else', () => {
    expect(parseWorkerEnv({}).VALUEDRIFT_MODEL_CACHE_BYTES).toBe(200 * 1024 ** 3);
    expect(parseWorkerEnv({ VALUEDRIFT_MODEL_CACHE_BYTES: '1048576' }).VALUEDRIFT_MODEL_CACHE_BYTES).toBe(1048576);
    for (const bad of ['0', '-1', '1.5', '200GiB']) expect(() => parseWorkerEnv({ VALUEDRIFT_MODEL_CACHE_BYTES: bad })).toThrow(/VALUEDRIFT_MODEL_CACHE_BYTES/);
  });
});

describe('model cache eviction (least recently used, byte limit)', () => {
  it('measures one cached model', async () => {
    const root = await useWorkDir('measure', 1024 ** 3);
    const m = models[0] as StoredModel;
    const got = await localModel(m.handle);
    await verify(m, got.path);
    await got.release();
    modelBytes = (await cacheState(root)).total;
    const weights = Object.values(m.files).reduce((a, b) => a + b.length, 0);
    // The weights and a small completion marker; no optimizer state.
    expect(modelBytes).toBeGreaterThanOrEqual(weights);
    expect(modelBytes).toBeLessThan(weights + 1024);
  });

  it('across 10 evaluations the cache stays within its limit and keeps the 3 most recently used models', async () => {
    const limit = Math.floor(modelBytes * 3.5);
    const root = await useWorkDir('lru', limit);
    // Each evaluation reads its checkpoint and the previous one (a comparison): a reference LRU
    // list says which three must be left.
    const recent: string[] = [];
    const use = async (m: StoredModel) => {
      const got = await localModel(m.handle);
      await verify(m, got.path);
      await got.release();
      if (recent.includes(m.key)) recent.splice(recent.indexOf(m.key), 1);
      recent.push(m.key);
      return got;
    };
    let downloads = 0;
    for (let i = 0; i < 10; i++) {
      const order = i === 0 ? [0] : i % 3 === 0 ? [i, 0] : [i, i - 1];
      for (const j of order) {
        const before = recent.includes((models[j] as StoredModel).key);
        const got = await use(models[j] as StoredModel);
        // A model still cached is served from the cache; one evicted or new is downloaded.
        expect(got.downloaded).toBe(!before);
        if (got.downloaded) downloads++;
        const state = await cacheState(root);
        expect(state.total).toBeLessThanOrEqual(limit);
        expect(state.keys).toEqual(recent.slice(-3).sort());
        // What is not among the three most recent was evicted, and logged.
        for (const k of recent.slice(0, -3)) expect(state.keys).not.toContain(k);
        if (recent.length > 3) recent.splice(0, recent.length - 3);
      }
    }
    // Model 0 was reused every third evaluation and evicted in between: downloaded more than once.
    expect(downloads).toBeGreaterThan(10);
    const evicted = logs.filter((l) => l.level === 'info' && l.msg.includes('evicted'));
    expect(evicted.length).toBe(downloads - 3);
    expect(logs.filter((l) => l.level === 'warn')).toEqual([]);
    // Nothing half-evicted, no lock or lease left behind.
    const left = await fs.readdir(root);
    expect(left.filter((n) => n.startsWith('.evicting') || n.startsWith('.lock'))).toEqual([]);
    expect(await fs.readdir(path.join(root, '.leases'))).toEqual([]);
  });

  it('a model in use is not evicted while over the limit (logged), and goes once released', async () => {
    const limit = Math.floor(modelBytes * 1.5);
    const root = await useWorkDir('in-use', limit);
    const [a, b, c] = models as [StoredModel, StoredModel, StoredModel];
    const held = await localModel(a.handle);
    // b is downloaded while a is in use: two models over a limit of 1.5; a is the older one but held.
    const second = await localModel(b.handle);
    let state = await cacheState(root);
    expect(state.keys).toEqual([a.key, b.key].sort());
    expect(state.total).toBeGreaterThan(limit);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes('over its limit') && l.msg.includes(`${a.key} (in use, 1 lease)`))).toBe(true);
    expect(logs.some((l) => l.msg.includes('evicted'))).toBe(false);
    await verify(a, held.path);
    await verify(b, second.path);
    // b released while the cache is over its limit: b (not in use) goes, a (older, in use) stays.
    await second.release();
    state = await cacheState(root);
    expect(state.keys).toEqual([a.key]);
    expect(logs.some((l) => l.level === 'info' && l.msg.includes(`evicted ${b.key}`))).toBe(true);
    // c downloaded: over the limit again with a held.
    const third = await localModel(c.handle);
    state = await cacheState(root);
    expect(state.keys).toEqual([a.key, c.key].sort());
    await verify(a, held.path);
    await verify(c, third.path);
    // a released: the cache is brought back within its limit at once, a (least recent) evicted.
    await held.release();
    state = await cacheState(root);
    expect(state.keys).toEqual([c.key]);
    expect(state.total).toBeLessThanOrEqual(limit);
    expect(logs.some((l) => l.level === 'info' && l.msg.includes(`evicted ${a.key}`))).toBe(true);
    // c still in use in the cache.
    await verify(c, third.path);
    await third.release();
    expect((await cacheState(root)).keys).toEqual([c.key]);
  });

  it('a re-requested evicted model is downloaded again and verified', async () => {
    const root = await useWorkDir('again', Math.floor(modelBytes * 1.5));
    const [a, b] = models as [StoredModel, StoredModel];
    await (await localModel(a.handle)).release();
    await (await localModel(b.handle)).release();
    expect((await cacheState(root)).keys).toEqual([b.key]);
    await expect(fs.access(path.join(root, a.key))).rejects.toThrow();
    const again = await localModel(a.handle);
    expect(again.downloaded).toBe(true);
    expect(again.path).toBe(path.join(root, a.key));
    await verify(a, again.path);
    await again.release();
    expect((await cacheState(root)).keys).toEqual([a.key]);
    // A folder damaged on disk without its completion marker is completed again, never trusted.
    const marker = (await fs.readdir(again.path)).find((n) => n.startsWith('.valuedrift-complete-')) as string;
    await fs.rm(path.join(again.path, marker));
    await fs.writeFile(path.join(again.path, 'model.safetensors'), 'truncated');
    const repaired = await localModel(a.handle);
    expect(repaired.downloaded).toBe(true);
    await verify(a, repaired.path);
    await repaired.release();
  });

  it('ignores a lease and a lock left by a worker process that died', async () => {
    const root = await useWorkDir('dead', Math.floor(modelBytes * 1.5));
    const [a, b] = models as [StoredModel, StoredModel];
    await (await localModel(a.handle)).release();
    // A process that has exited: its pid names the lease it "held" on a, and the cache's lock.
    const dead = await execFileAsync(process.execPath, ['-e', 'console.log(process.pid)']);
    const pid = dead.stdout.trim();
    const holder = `${encodeURIComponent(os.hostname())}~${pid}~crashed`;
    await fs.mkdir(path.join(root, '.leases', a.key), { recursive: true });
    await fs.writeFile(path.join(root, '.leases', a.key, holder), '');
    await fs.mkdir(path.join(root, '.lock'));
    await fs.writeFile(path.join(root, '.lock', 'owner'), holder);
    const got = await localModel(b.handle);
    expect((await cacheState(root)).keys).toEqual([b.key]);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes('removed a lock') && l.msg.includes(`pid ${pid}`))).toBe(true);
    expect(logs.some((l) => l.level === 'warn' && l.msg.includes(`lease on ${a.key}`) && l.msg.includes(pid))).toBe(true);
    await verify(b, got.path);
    await got.release();
  });

  it('many requests at once, from two worker processes sharing the work dir, all get complete models', async () => {
    const limit = Math.floor(modelBytes * 2.5);
    const root = await useWorkDir('concurrent', limit);
    const pool = models.slice(0, 6);
    // A second worker process on the same work dir, running its own requests with evictions.
    const script = `
      const { localModel } = require('./activities/models');
      const { sha256Hex } = require('./activities/store');
      const fs = require('node:fs/promises');
      const path = require('node:path');
      const jobs = JSON.parse(process.argv[process.argv.length - 1]);
      (async () => {
        await Promise.all(jobs.map(async (j, n) => {
          await new Promise((r) => setTimeout(r, (n % 5) * 7));
          const got = await localModel(j.handle);
          for (const [rel, sha] of Object.entries(j.files)) {
            const h = sha256Hex(await fs.readFile(path.join(got.path, rel)));
            if (h !== sha) throw new Error(rel + ' in ' + got.path + ': ' + h + ' != ' + sha);
          }
          await new Promise((r) => setTimeout(r, 20));
          await got.release();
        }));
        console.log('ok ' + jobs.length);
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const jobsFor = (offset: number) =>
      Array.from({ length: 18 }, (_, n) => pool[(n * 5 + offset) % pool.length] as StoredModel).map((m) => ({
        handle: m.handle,
        files: Object.fromEntries(Object.entries(m.files).map(([rel, body]) => [rel, sha256Hex(body)])),
      }));
    const other = execFileAsync(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), '-e', script, JSON.stringify(jobsFor(1))], {
      cwd: REPO_ROOT,
      env: { ...process.env },
      maxBuffer: 4 * 1024 * 1024,
    });
    const here = jobsFor(0).map(async (_, n) => {
      const m = pool[(n * 5) % pool.length] as StoredModel;
      await new Promise((r) => setTimeout(r, (n % 4) * 9));
      const got: LocalModel = await localModel(m.handle);
      await verify(m, got.path);
      await new Promise((r) => setTimeout(r, 15));
      await verify(m, got.path);
      await got.release();
    });
    const results = await Promise.allSettled([...here, other]);
    const rejected = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
    if (rejected.length > 0) console.error(rejected.join('\n---\n'));
    expect(rejected).toEqual([]);
    expect((await other).stdout).toContain('ok 18');
    // Once everyone is done, a last download leaves the cache within its limit.
    const last = models[9] as StoredModel;
    await (await localModel(last.handle)).release();
    expect(logs.some((l) => l.msg.includes('evicted'))).toBe(true);
    const state = await cacheState(root);
    expect(state.total).toBeLessThanOrEqual(limit);
    expect(state.keys).toContain(last.key);
    for (const key of state.keys) await verify(models.find((m) => m.key === key) as StoredModel, path.join(root, key));
    expect((await fs.readdir(root)).filter((n) => n.startsWith('.evicting') || n.startsWith('.lock'))).toEqual([]);
  }, 180_000);
});
