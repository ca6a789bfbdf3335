/**
 * The local S3 server (infra/s3server, started by infra/services/s3.ts) keeps objects on disk: a
 * stack of its own on a scratch data directory and free ports, driven through `infra/dev.ts` as a
 * person would (`up`, `down`, `up`), and a SIGKILL of the server. After each restart every object
 * reads back with the same bytes, ETag, size and metadata; deleted ones stay deleted.
 *
 * The client is the AWS SDK v3 with its defaults (flexible checksums on), as activities/store.ts
 * uses it: single PUTs from a Buffer and from a stream, a multipart upload through
 * @aws-sdk/lib-storage, ranged GETs, paged and delimited ListObjectsV2, DeleteObjects.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';

import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { dataPaths } from '../../infra/paths';
import { REPO_ROOT, TSX_BIN } from '../../infra/paths';
import { SERVICE } from '../../infra/services/service';
import { loadStackEnv } from '../../infra/stackEnv';
import { StackRecord } from '../../infra/stackRecord';

const run = promisify(execFile);

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

interface Seen {
  etag: string | undefined;
  size: number | undefined;
  sha256: string;
  meta: Record<string, string> | undefined;
  contentType: string | undefined;
}

describe('local S3 server keeps objects across restarts', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'valuedrift-s3-'));
  let env: NodeJS.ProcessEnv;
  let s3: S3Client;
  let clientConfig: S3ClientConfig;
  let bucket: string;

  async function dev(...args: string[]): Promise<string> {
    const { stdout } = await run(TSX_BIN, [path.join(REPO_ROOT, 'infra', 'dev.ts'), ...args], { cwd: REPO_ROOT, env, timeout: 300_000 });
    return stdout;
  }

  async function body(key: string, range?: string): Promise<Buffer> {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: range }));
    return Buffer.from(await out.Body!.transformToByteArray());
  }

  async function seen(key: string): Promise<Seen> {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { etag: head.ETag, size: head.ContentLength, sha256: sha(await body(key)), meta: head.Metadata, contentType: head.ContentType };
  }

  async function allKeys(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 2, ContinuationToken: token }));
      keys.push(...(out.Contents ?? []).map((o) => o.Key!));
      token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
    } while (token !== undefined);
    return keys;
  }

  beforeAll(async () => {
    env = {
      ...process.env,
      VALUEDRIFT_DATA_DIR: dataDir,
      VALUEDRIFT_TEMPORAL_PORT: String(await freePort()),
      VALUEDRIFT_TEMPORAL_UI_PORT: String(await freePort()),
      VALUEDRIFT_S3_PORT: String(await freePort()),
      VALUEDRIFT_JUDGE_PORT: String(await freePort()),
    };
    await dev('up', '--no-workers', '--no-judge');
    const stackEnv = loadStackEnv(dataPaths(dataDir).stackEnvFile);
    bucket = stackEnv.VALUEDRIFT_S3_BUCKET!;
    clientConfig = {
      endpoint: stackEnv.VALUEDRIFT_S3_ENDPOINT,
      region: stackEnv.VALUEDRIFT_S3_REGION,
      forcePathStyle: true,
      credentials: { accessKeyId: stackEnv.AWS_ACCESS_KEY_ID!, secretAccessKey: stackEnv.AWS_SECRET_ACCESS_KEY! },
    };
    s3 = new S3Client({ ...clientConfig, maxAttempts: 5 });
  }, 600_000);

  afterAll(async () => {
    s3?.destroy();
    try {
      await dev('down');
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('serves the SDK, and after `dev.ts down` + `up` and after a SIGKILL every object reads back the same', async () => {
    const small = Buffer.from('{"hello":"world"}\n');
    const streamed = randomBytes(300_000);
    const big = randomBytes(12 * 1024 * 1024 + 12345); // 3 parts of 5 MiB (the last shorter)
    const keys = {
      small: 'p/a/small.json',
      streamed: 'p/a/streamed.bin',
      big: 'p/b/big.bin',
      folderToo: 'p/b', // a key that is also the "folder" of another key
      gone: 'p/c/deleted.txt',
    };
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys.small, Body: small, ContentType: 'application/json', Metadata: { sha256: sha(small) } }));
    await s3.send(
      new PutObjectCommand({ Bucket: bucket, Key: keys.streamed, Body: Readable.from([streamed.subarray(0, 100_000), streamed.subarray(100_000)]), ContentLength: streamed.length }),
    );
    const upload = new Upload({
      client: s3,
      params: { Bucket: bucket, Key: keys.big, Body: Readable.from([big]), Metadata: { sha256: sha(big) } },
      partSize: 5 * 1024 * 1024,
      queueSize: 2,
      leavePartsOnError: false,
    });
    let parts = 0;
    upload.on('httpUploadProgress', () => (parts += 1));
    await upload.done();
    expect(parts).toBeGreaterThanOrEqual(3);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys.folderToo, Body: 'x' }));
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys.gone, Body: 'bye' }));
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: [{ Key: keys.gone }] } }));

    // Bytes as written, ranges, metadata, listing.
    expect(await body(keys.small)).toEqual(small);
    expect(await body(keys.streamed)).toEqual(streamed);
    expect(sha(await body(keys.big))).toBe(sha(big));
    expect(await body(keys.big, 'bytes=5242870-5242889')).toEqual(big.subarray(5242870, 5242890));
    expect(await body(keys.big, `bytes=-7`)).toEqual(big.subarray(big.length - 7));
    const listed = await allKeys('p/');
    expect(listed).toEqual([keys.small, keys.streamed, keys.folderToo, keys.big]);
    const delimited = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'p/', Delimiter: '/' }));
    expect((delimited.CommonPrefixes ?? []).map((p) => p.Prefix)).toEqual(['p/a/', 'p/b/']);
    expect((delimited.Contents ?? []).map((o) => o.Key)).toEqual([keys.folderToo]);

    const before: Record<string, Seen> = {};
    for (const key of [keys.small, keys.streamed, keys.big, keys.folderToo]) before[key] = await seen(key);
    expect(before[keys.small]).toMatchObject({ size: small.length, sha256: sha(small), meta: { sha256: sha(small) }, contentType: 'application/json' });
    expect(before[keys.big]).toMatchObject({ size: big.length, meta: { sha256: sha(big) } });
    expect(before[keys.small]!.etag).toBe(`"${createHash('md5').update(small).digest('hex')}"`);

    const afterRestart = async (): Promise<void> => {
      for (const [key, want] of Object.entries(before)) expect(await seen(key), key).toEqual(want);
      expect(await allKeys('p/')).toEqual(listed);
      await expect(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: keys.gone }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
    };

    // 1. The whole stack down and up again, as a person would.
    const records = new StackRecord(dataPaths(dataDir).stackFile);
    const firstPid = records.find(SERVICE.s3)!.pid;
    expect(await dev('down')).toMatch(/stack down: .*s3/);
    expect(await dev('up', '--no-workers', '--no-judge')).toMatch(/started \[[^\]]*s3/);
    expect(records.find(SERVICE.s3)!.pid).not.toBe(firstPid);
    await afterRestart();

    // 2. The server killed outright (no chance to finish anything), then restarted by `up`.
    const killed = records.find(SERVICE.s3)!;
    process.kill(-killed.pgid, 'SIGKILL');
    await expect.poll(async () => (await dev('status').catch((e: { stdout?: string }) => e.stdout ?? '')).includes('NO'), { timeout: 10_000 }).toBe(true);
    expect(await dev('up', '--no-workers', '--no-judge')).toMatch(/started \[[^\]]*s3/);
    await afterRestart();

    // Overwrites after a restart replace bytes and metadata.
    const replaced = Buffer.from('replaced');
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keys.small, Body: replaced }));
    const now = await seen(keys.small);
    expect(now.sha256).toBe(sha(replaced));
    expect(now.meta).toEqual({});
  }, 600_000);

  it('a server killed in the middle of a PUT keeps no partial object and no stray file', async () => {
    const key = 'q/interrupted.bin';
    const records = new StackRecord(dataPaths(dataDir).stackFile);
    const server = records.find(SERVICE.s3)!;
    let sent = 0;
    async function* slowBody(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 40; i++) {
        if (i === 8) process.kill(-server.pgid, 'SIGKILL'); // 8 MiB in: the server is gone
        sent += 1;
        yield randomBytes(1024 * 1024);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    const oneShot = new S3Client({ ...clientConfig, maxAttempts: 1 });
    try {
      await expect(oneShot.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: Readable.from(slowBody()), ContentLength: 40 * 1024 * 1024 }))).rejects.toThrow();
    } finally {
      oneShot.destroy();
    }
    expect(sent).toBeGreaterThanOrEqual(8);
    expect(await dev('up', '--no-workers', '--no-judge')).toMatch(/started \[[^\]]*s3/);

    await expect(s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).rejects.toMatchObject({ $metadata: { httpStatusCode: 404 } });
    // On disk: the write in progress is gone, and every data file belongs to a listed object.
    const root = path.join(dataDir, 's3');
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
    const listed = (await s3.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? [];
    expect(fs.readdirSync(path.join(root, 'buckets', bucket, 'data'))).toHaveLength(listed.length);
    expect(fs.readdirSync(path.join(root, 'buckets', bucket, 'objects'))).toHaveLength(listed.length);
  }, 300_000);
});
