/**
 * A hub mirror held in the store (VALUEDRIFT_HF_MIRROR=s3://bucket/prefix), on the stack's real S3
 * server and the real trainer: the worker downloads `<prefix>/<owner>/<name>/` and the trainer
 * prepares from it by the same code path as a folder mirror (test/datasets/recipes.test.ts), so the
 * same raw files give the same rows under the same content key whichever way they are mirrored; the
 * download is cached on the worker (a second preparation fetches nothing), under a byte limit
 * (VALUEDRIFT_HF_MIRROR_CACHE_BYTES): least recently used folders are evicted, never one the trainer is
 * reading, and an evicted id is downloaded again to the same content key.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DatasetManifest, prepareDatasets, storeMirrorSetting } from '../../activities/datasets';
import { parseWorkerEnv, resetWorkerEnv } from '../../activities/env';
import { cacheEntries, cacheLog } from '../../activities/modelCache';
import { bucket, getJson, putFile } from '../../activities/store';
import { LineageSpec, type DatasetSpec } from '../../common/spec';
import { loadStackEnv, restoreEnv } from '../support/workflowEnv';

const REPO = path.resolve(__dirname, '..', '..');
const KEYS = ['VALUEDRIFT_HF_MIRROR', 'HF_HUB_OFFLINE', 'VALUEDRIFT_WORK_DIR', 'VALUEDRIFT_DATA_ROOT', 'VALUEDRIFT_HF_MIRROR_CACHE_BYTES'];
const saved = { ...process.env };
let tmp: string;
let folder: string;

function setEnv(vars: Record<string, string>): void {
  Object.assign(process.env, vars);
  resetWorkerEnv();
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  return out.sort();
}

beforeAll(async () => {
  loadStackEnv();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'vd-store-mirror-'));
  folder = path.join(tmp, 'mirror');
  execFileSync(path.join(REPO, '.venv', 'bin', 'python'), [path.join(REPO, 'trainer', 'tests', 'fixtures', 'hub_mirror.py'), folder]);
  await fs.mkdir(path.join(tmp, 'root'));
  setEnv({ HF_HUB_OFFLINE: '1', VALUEDRIFT_WORK_DIR: path.join(tmp, 'work'), VALUEDRIFT_DATA_ROOT: path.join(tmp, 'root') });
});
afterAll(async () => {
  restoreEnv(saved, KEYS);
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('a hub mirror in the store', () => {
  it('reads the setting: s3://bucket[/prefix], anything else is a folder', () => {
    expect(storeMirrorSetting('s3://mirrors/hub/raw/')).toEqual({ uri: 's3://mirrors/hub/raw', bucket: 'mirrors', prefix: 'hub/raw' });
    expect(storeMirrorSetting('s3://mirrors')).toEqual({ uri: 's3://mirrors', bucket: 'mirrors', prefix: '' });
    expect(storeMirrorSetting('/data/hub-mirror')).toBeUndefined();
    expect(storeMirrorSetting(undefined)).toBeUndefined();
    // A malformed store mirror stops the worker at start, naming the variable.
    expect(parseWorkerEnv({ VALUEDRIFT_HF_MIRROR: 's3://mirrors/hub' }).VALUEDRIFT_HF_MIRROR).toBe('s3://mirrors/hub');
    for (const bad of ['s3:/mirrors', 's3://', 's3://Bad_Bucket/x']) expect(() => parseWorkerEnv({ VALUEDRIFT_HF_MIRROR: bad })).toThrow(/VALUEDRIFT_HF_MIRROR=.*s3:\/\/<bucket>/);
  });

  it('prepares hub datasets from the store mirror as from the same folder, and downloads the mirror once', async () => {
    const prefix = `test-hf-mirror/${process.pid}-${Date.now()}`;
    for (const rel of await filesUnder(folder)) await putFile(`${prefix}/${rel.split(path.sep).join('/')}`, path.join(folder, rel));
    const paper = LineageSpec.parse(JSON.parse(await fs.readFile(path.join(REPO, 'specs', 'paper', 'paper-llama3-3b.json'), 'utf8')));
    const datasets = { wildchat: paper.datasets.wildchat, ultrafeedback: paper.datasets.ultrafeedback } as Record<string, DatasetSpec>;
    const seed = Date.now() % 1_000_000; // keys of their own: the first run must convert

    setEnv({ VALUEDRIFT_HF_MIRROR: `s3://${bucket()}/${prefix}/` });
    const fromStore = (await prepareDatasets({ lineage: 'store-mirror-test', datasets, seed })).datasets;
    expect([fromStore.wildchat!.rows, fromStore.wildchat!.validation?.rows]).toEqual([27, 3]); // as from the folder
    expect(fromStore.ultrafeedback!.rows).toBe(20);
    const m = await getJson(fromStore.wildchat!.manifest!, DatasetManifest);
    expect(m.source).toMatchObject({ kind: 'mirror', split: 'train', mirror: `s3://${bucket()}/${prefix}/allenai/WildChat-1M` });
    expect(String(m.source.revision)).toMatch(/^mirror-sha256:[0-9a-f]{64}$/);
    expect(m.rows).toMatchObject({ read: 40, filtered_out: 10, train: 27, validation: 3 });

    // The downloaded folders are cached on the worker: one per mirrored id, each file as in the folder.
    const cache = path.join(tmp, 'work', 'hf-mirror');
    const cached = (await fs.readdir(cache)).filter((n) => !n.startsWith('.')).sort(); // not the cache's .leases bookkeeping
    expect(cached).toHaveLength(2);
    const stamps = async (): Promise<Record<string, number>> => {
      const out: Record<string, number> = {};
      for (const d of cached) for (const f of await filesUnder(path.join(cache, d))) out[`${d}/${f}`] = (await fs.stat(path.join(cache, d, f))).mtimeMs;
      return out;
    };
    const before = await stamps();
    const wcFiles = await filesUnder(path.join(folder, 'allenai', 'WildChat-1M'));
    expect(Object.keys(before).filter((k) => !k.endsWith('.valuedrift-complete')).map((k) => k.split('/').slice(1).join('/')).sort()).toEqual(
      [...wcFiles, ...(await filesUnder(path.join(folder, 'argilla', 'ultrafeedback-binarized-preferences-cleaned')))].sort(),
    );

    // The same raw files from the folder mirror: the same content key, so the same stored rows.
    setEnv({ VALUEDRIFT_HF_MIRROR: folder });
    const fromFolder = (await prepareDatasets({ lineage: 'store-mirror-test', datasets, seed })).datasets;
    expect(fromFolder.wildchat!.manifest).toBe(fromStore.wildchat!.manifest);
    expect(fromFolder.wildchat!.ref).toEqual(fromStore.wildchat!.ref);
    expect(fromFolder.ultrafeedback!.ref).toEqual(fromStore.ultrafeedback!.ref);

    // Again from the store: nothing downloaded (the cached files untouched), the same result.
    setEnv({ VALUEDRIFT_HF_MIRROR: `s3://${bucket()}/${prefix}` });
    const again = (await prepareDatasets({ lineage: 'store-mirror-test', datasets, seed })).datasets;
    expect(again).toEqual(fromStore);
    expect(await stamps()).toEqual(before);
  }, 240_000);
});

describe('the store-mirror cache under a byte limit', () => {
  it('reads the limit setting (default 100 GiB), refusing what is not a positive whole number', () => {
    expect(parseWorkerEnv({}).VALUEDRIFT_HF_MIRROR_CACHE_BYTES).toBe(100 * 1024 ** 3);
    expect(parseWorkerEnv({ VALUEDRIFT_HF_MIRROR_CACHE_BYTES: '20000' }).VALUEDRIFT_HF_MIRROR_CACHE_BYTES).toBe(20_000);
    for (const bad of ['0', '-1', '1.5', '10GiB']) expect(() => parseWorkerEnv({ VALUEDRIFT_HF_MIRROR_CACHE_BYTES: bad })).toThrow(/VALUEDRIFT_HF_MIRROR_CACHE_BYTES/);
  });

  it('keeps the folders under the limit after each preparation, never evicts one the trainer reads, and an evicted id gives the same content key again', async () => {
    const LIMIT = 20_000;
    const prefix = `test-hf-mirror-evict/${process.pid}-${Date.now()}`;
    for (const rel of await filesUnder(folder)) await putFile(`${prefix}/${rel.split(path.sep).join('/')}`, path.join(folder, rel));
    const paper = LineageSpec.parse(JSON.parse(await fs.readFile(path.join(REPO, 'specs', 'paper', 'paper-llama3-3b.json'), 'utf8')));
    const pick = (...names: string[]) => Object.fromEntries(names.map((n) => [n, paper.datasets[n]])) as Record<string, DatasetSpec>;
    const seed = (Date.now() + 7) % 1_000_000;
    const work = path.join(tmp, 'work-evict');
    const cache = path.join(work, 'hf-mirror');
    setEnv({ VALUEDRIFT_HF_MIRROR: `s3://${bucket()}/${prefix}`, VALUEDRIFT_WORK_DIR: work, VALUEDRIFT_HF_MIRROR_CACHE_BYTES: String(LIMIT) });
    const mirrorBytes = async (id: string) => {
      let n = 0;
      for (const f of await filesUnder(path.join(folder, ...id.split('/')))) n += (await fs.stat(path.join(folder, ...id.split('/'), f))).size;
      return n;
    };
    const wildchat = await mirrorBytes('allenai/WildChat-1M');
    const others = (await mirrorBytes('argilla/ultrafeedback-binarized-preferences-cleaned')) + (await mirrorBytes('tatsu-lab/alpaca'));
    // The three together are over the limit; WildChat alone and the other two together are under it.
    expect(wildchat + others).toBeGreaterThan(LIMIT);
    expect(wildchat).toBeLessThan(LIMIT);
    expect(others).toBeLessThan(LIMIT);
    const evicted: string[] = [];
    const spy = vi.spyOn(cacheLog, 'info').mockImplementation((m: string) => void evicted.push(m));
    try {
      // One preparation reads all three: the third download goes over the limit, but the first two
      // are leased while the trainer reads them, so every dataset is prepared from its mirror.
      const first = (await prepareDatasets({ lineage: 'store-mirror-evict', datasets: pick('wildchat', 'ultrafeedback', 'alpaca'), seed })).datasets;
      expect([first.wildchat!.rows, first.wildchat!.validation?.rows]).toEqual([27, 3]);
      expect(first.ultrafeedback!.rows).toBe(20);
      expect(first.alpaca!.rows).toBeGreaterThan(0);
      for (const n of ['wildchat', 'ultrafeedback', 'alpaca']) expect((await getJson(first[n]!.manifest!, DatasetManifest)).source.kind, n).toBe('mirror');
      // Released after the run, the least recently used (WildChat, fetched first) is evicted.
      let entries = await cacheEntries(cache);
      expect(entries.reduce((a, e) => a + e.bytes, 0)).toBeLessThanOrEqual(LIMIT);
      expect(entries).toHaveLength(2);
      expect(entries.every((e) => e.leases === 0)).toBe(true);
      expect(evicted.filter((m) => m.startsWith(`hf-mirror cache ${cache}: evicted `))).toHaveLength(1);
      const wildchatManifest = await getJson(first.wildchat!.manifest!, DatasetManifest);

      // WildChat again: downloaded again (it was evicted), the same content key and rows; the two
      // older folders make room, and the cache is again under its limit.
      const again = (await prepareDatasets({ lineage: 'store-mirror-evict', datasets: pick('wildchat'), seed })).datasets;
      expect(again.wildchat!.manifest).toBe(first.wildchat!.manifest);
      expect(again.wildchat!.ref).toEqual(first.wildchat!.ref);
      expect((await getJson(again.wildchat!.manifest!, DatasetManifest)).source.revision).toBe(wildchatManifest.source.revision);
      entries = await cacheEntries(cache);
      expect(entries.reduce((a, e) => a + e.bytes, 0)).toBeLessThanOrEqual(LIMIT);
      expect(entries).toHaveLength(1);
      expect(evicted.filter((m) => m.startsWith(`hf-mirror cache ${cache}: evicted `))).toHaveLength(3);
      expect((await fs.readdir(cache)).filter((n) => n.startsWith('.evicting-'))).toEqual([]);
    } finally {
      spy.mockRestore();
    }
  }, 240_000);
});
