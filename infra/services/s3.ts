/**
 * The S3-compatible server: infra/s3server/, a small Go program (gofakes3's S3 protocol, Apache-2.0
 * / MIT, over a store of our own) that keeps every object in a file under `<data dir>/s3/`, so that
 * a stack restart keeps the artifacts Temporal's histories point at. Path-style, on loopback, with
 * the stack's bucket; it checks no signatures (any key pair works).
 *
 * It is built from source with the machine's Go (`go build`, modules from the Go module proxy, pinned
 * by infra/s3server/go.sum) into `<repo>/.data/bin/s3server-<hash of its sources>`: a source change
 * builds a new binary, an unchanged one costs a few file reads. A running server answers with the
 * hash it was built from (X-Valuedrift-S3server), and `dev:up` replaces one that is not the current
 * build (an older server, or the moto server this replaced).
 *
 * What it does not keep across a restart: multipart uploads in progress (gofakes3 holds their parts
 * in memory until the upload completes, and about twice the object's size while it is assembled);
 * the client's retry uploads the file again.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

import { ensureBucket } from '../bucket';
import { type LogFn, runCommand, withFileLock } from '../proc';
import { REPO_ROOT } from '../settings';
import { type LocalService, PROBE_TIMEOUT_MS, SERVICE, SERVICE_DEFAULTS, type ServiceContext, childEnv, httpAnswers } from './service';

/** The Go sources of the server. */
export const S3SERVER_SRC_DIR = path.join(REPO_ROOT, 'infra', 's3server');
/** Built binaries, one per source hash (per checkout, like `.venv`). */
export const S3SERVER_BIN_DIR = path.join(REPO_ROOT, '.data', 'bin');
/** The response header that names the build a running server came from. */
export const BUILD_ID_HEADER = 'x-valuedrift-s3server';

/** Opens a folder of records and starts listening: well under a second, more with many objects. */
const READY_TIMEOUT_MS = 60_000;
/** A first build compiles net/http and crypto from Go's sources into an empty build cache: minutes on 2 cores. */
const BUILD_TIMEOUT_MS = 20 * 60_000;

/**
 * The Go toolchain: `go` on PATH, else the official install's place (a non-login shell, as CI's,
 * may not have /usr/local/go/bin on PATH), else $GOROOT/bin/go.
 */
export function goBinary(env: NodeJS.ProcessEnv): string | null {
  const exe = process.platform === 'win32' ? 'go.exe' : 'go';
  const onPath = (env.PATH ?? '').split(path.delimiter).filter((d) => d !== '').map((d) => path.join(d, exe));
  const known = [path.join('/usr/local/go/bin', exe), ...(env.GOROOT ? [path.join(env.GOROOT, 'bin', exe)] : [])];
  for (const candidate of [...onPath, ...known]) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

/** sha256 over the server's sources (go.mod, go.sum, *.go) and the platform: names the binary. */
export function s3ServerBuildId(): string {
  const hash = createHash('sha256');
  const files = fs
    .readdirSync(S3SERVER_SRC_DIR)
    .filter((f) => f === 'go.mod' || f === 'go.sum' || (f.endsWith('.go') && !f.endsWith('_test.go')))
    .sort();
  for (const file of files) hash.update(`${file}\n${fs.readFileSync(path.join(S3SERVER_SRC_DIR, file), 'utf8')}\n`);
  hash.update(`${process.platform}-${process.arch}\n`);
  return hash.digest('hex').slice(0, 16);
}

export function s3ServerBinary(buildId: string = s3ServerBuildId()): string {
  return path.join(S3SERVER_BIN_DIR, `s3server-${buildId}${process.platform === 'win32' ? '.exe' : ''}`);
}

/**
 * Builds the server unless the binary for the current sources exists. Safe to call from several
 * processes at once (they take turns on a lock file); older builds are removed.
 */
export async function ensureS3Server(opts: { log: LogFn }): Promise<string> {
  const buildId = s3ServerBuildId();
  const bin = s3ServerBinary(buildId);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(S3SERVER_BIN_DIR, { recursive: true });
  return withFileLock(path.join(S3SERVER_BIN_DIR, '.s3server-build.lock'), { timeoutMs: BUILD_TIMEOUT_MS, what: 's3server build', log: opts.log }, async () => {
    if (fs.existsSync(bin)) return bin; // another process built it while we waited
    opts.log(`s3server: building ${path.relative(REPO_ROOT, bin)} with go (first build: a few minutes)`);
    const started = Date.now();
    const tmp = `${bin}.tmp-${process.pid}`;
    const env = { ...process.env };
    const go = goBinary(env);
    if (go === null) {
      throw new Error('s3server: no `go` on PATH nor in /usr/local/go/bin; the local S3 server is built from infra/s3server with Go >= 1.24 (https://go.dev/dl/ or your package manager)');
    }
    let res;
    try {
      res = await runCommand(go, ['build', '-ldflags=-s -w', '-o', tmp, '.'], {
        cwd: S3SERVER_SRC_DIR,
        // go.sum pins every module: nothing may change it here, nor fetch another toolchain; no VCS
        // stamp (a checkout owned by another user would fail it).
        env: { ...env, GOFLAGS: '-mod=readonly -buildvcs=false', GOTOOLCHAIN: 'local', CGO_ENABLED: '0' },
        timeoutMs: BUILD_TIMEOUT_MS,
        keepChars: 20_000,
      });
    } catch (err) {
      throw new Error(`s3server: ${go} build could not start: ${String(err)}`);
    }
    if (res.code !== 0) {
      fs.rmSync(tmp, { force: true });
      throw new Error(`s3server: go build failed (exit ${res.code ?? res.signal}) in ${S3SERVER_SRC_DIR}:\n${(res.stderr || res.stdout).trim()}`);
    }
    fs.renameSync(tmp, bin);
    for (const old of fs.readdirSync(S3SERVER_BIN_DIR)) {
      if (old.startsWith('s3server-') && path.join(S3SERVER_BIN_DIR, old) !== bin && !old.includes('.tmp-')) {
        fs.rmSync(path.join(S3SERVER_BIN_DIR, old), { force: true });
      }
    }
    opts.log(`s3server: built in ${Math.round((Date.now() - started) / 1000)} s`);
    return bin;
  });
}

/** The build a server on this endpoint answers with ('' when the header is absent), or null when it does not answer. */
export async function runningS3ServerBuild(endpoint: string): Promise<string | null> {
  try {
    const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
    await res.arrayBuffer();
    return res.headers.get(BUILD_ID_HEADER) ?? '';
  } catch {
    return null;
  }
}

export function s3Service(ctx: ServiceContext): LocalService {
  const { settings: s, data } = ctx;
  const buildId = s3ServerBuildId();
  return {
    ...SERVICE_DEFAULTS,
    name: SERVICE.s3,
    port: s.s3Port,
    logFile: data.logFileFor(SERVICE.s3),
    launch: {
      cmd: s3ServerBinary(buildId),
      args: ['-host', s.localHost, '-port', String(s.s3Port), '-dir', data.s3DataDir, '-bucket', s.s3Bucket, '-build-id', buildId],
      env: childEnv({}),
    },
    readyTimeoutMs: READY_TIMEOUT_MS,
    // ListBuckets: cheap and independent of what is stored.
    healthy: () => httpAnswers(`${s.s3Endpoint}/`, true),
    mismatch: async () => {
      const running = await runningS3ServerBuild(s.s3Endpoint);
      if (running === null || running === buildId) return null;
      return running === '' ? 'is not the persistent S3 server (an older stack: moto keeps objects in memory)' : `is an older build (${running}) of infra/s3server`;
    },
    afterReady: () => ensureBucket(s, ctx.log),
  };
}
