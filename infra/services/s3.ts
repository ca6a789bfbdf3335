/**
 * The S3-compatible server: moto (PyPI `moto[server]`), path-style on loopback, with the stack's
 * bucket. moto keeps objects in memory (large ones spooled to temporary files): moto 5.2.5 has no
 * persistence (its request "recorder" replays raw requests and cannot replay multipart uploads,
 * which checkpoints use), so A STACK RESTART LOSES THE BUCKET'S CONTENTS. Point the workers'
 * VALUEDRIFT_S3_* at a real S3 / R2 / MinIO to keep artifacts.
 */
import { ensureBucket } from '../bucket';
import { type LocalService, SERVICE, SERVICE_DEFAULTS, type ServiceContext, childEnv, httpAnswers } from './service';

/** moto imports botocore's service models at start: a few seconds. */
const READY_TIMEOUT_MS = 60_000;

export function s3Service(ctx: ServiceContext): LocalService {
  const { settings: s, data } = ctx;
  return {
    ...SERVICE_DEFAULTS,
    name: SERVICE.s3,
    port: s.s3Port,
    logFile: data.logFileFor(SERVICE.s3),
    launch: {
      cmd: ctx.py.python,
      args: ['-m', 'moto.server', '-H', s.localHost, '-p', String(s.s3Port)],
      // moto spools objects above ~5 MB to temporary files: keep them on the data directory's disk
      // rather than a possibly RAM-backed /tmp (checkpoints are hundreds of MB).
      env: childEnv({ TMPDIR: data.s3DataDir, PYTHONUNBUFFERED: '1' }),
    },
    readyTimeoutMs: READY_TIMEOUT_MS,
    // ListBuckets: cheap and independent of what is stored. (moto's /moto-api/data.json serialises
    // every object, takes long with checkpoints in it, and can answer 500 for a stale multipart
    // upload; a failed probe restarts the server, and a restart empties the in-memory bucket.)
    healthy: () => httpAnswers(`${s.s3Endpoint}/`, true),
    afterReady: () => ensureBucket(s, ctx.log),
  };
}
