/**
 * Every address, port, name and credential of the embedded local stack, in one place. Each one can
 * be overridden from the environment (the variable is named next to it), e.g. to run a second
 * stack beside the first: `VALUEDRIFT_TEMPORAL_PORT=7234 VALUEDRIFT_TEMPORAL_UI_PORT=8234 ...`.
 *
 * The credentials are not secrets: the local S3 server (moto) accepts any key pair; these fixed
 * ones only make the local stack look like a real endpoint to the AWS SDK.
 */
import { LOCAL_JUDGE_MODELS, type LocalJudgeKind, localJudgeKind } from './judge/serve';

export { LOCAL_JUDGE_ENV, type LocalJudgeKind } from './judge/serve';

function envString(name: string, fallback: string): string {
  const value = process.env[name];
  return value === undefined || value === '' ? fallback : value;
}

function envPort(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const port = Number(raw);
  // A typo in a port must fail here, not later as a confusing "connection refused".
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`${name}=${JSON.stringify(raw)} is not a TCP port (1-65535)`);
  }
  return port;
}

/** Loopback only: the local stack has no authentication, so it must never listen on a public interface. */
export const LOCAL_HOST = envString('VALUEDRIFT_LOCAL_HOST', '127.0.0.1');

export const TEMPORAL_PORT = envPort('VALUEDRIFT_TEMPORAL_PORT', 7233);
export const TEMPORAL_UI_PORT = envPort('VALUEDRIFT_TEMPORAL_UI_PORT', 8233);
export const TEMPORAL_NAMESPACE = envString('VALUEDRIFT_TEMPORAL_NAMESPACE', 'default');
export const TEMPORAL_ADDRESS = `${LOCAL_HOST}:${TEMPORAL_PORT}`;
export const TEMPORAL_UI_URL = `http://${LOCAL_HOST}:${TEMPORAL_UI_PORT}`;

/**
 * Custom search attributes the lineage workflows set, registered as Keyword by the stack (exact-match
 * filters in the UI, e.g. `Lineage = "demo" AND Algorithm = "dpo"`). Defined with the workflows.
 */
export { SEARCH_ATTRIBUTES, type SearchAttributeName } from '../common/config';

export const S3_PORT = envPort('VALUEDRIFT_S3_PORT', 9000);
export const S3_ENDPOINT = `http://${LOCAL_HOST}:${S3_PORT}`;
export const S3_BUCKET = envString('VALUEDRIFT_S3_BUCKET', 'valuedrift');
export const S3_REGION = envString('VALUEDRIFT_S3_REGION', 'us-east-1');
export const S3_ACCESS_KEY_ID = 'valuedrift-local';
export const S3_SECRET_ACCESS_KEY = 'valuedrift-local-secret';

export const JUDGE_PORT = envPort('VALUEDRIFT_JUDGE_PORT', 8088);
export const JUDGE_BASE_URL = `http://${LOCAL_HOST}:${JUDGE_PORT}/v1`;
/**
 * Which local judge the stack runs (`VALUEDRIFT_LOCAL_JUDGE`): `minilm` (default, the MiniLM stance
 * classifier) or `smollm2` (llama.cpp serving SmolLM2-135M, at chance). Anything else fails here.
 */
export const LOCAL_JUDGE_KIND: LocalJudgeKind = localJudgeKind();
/** The name the local judge server answers to (what `model` must be in a request): follows the kind. */
export const JUDGE_MODEL = LOCAL_JUDGE_MODELS[LOCAL_JUDGE_KIND];
/** The local judge ignores the key; the OpenAI client refuses to start without one. */
export const JUDGE_API_KEY = 'local';

/** Service names as recorded in `.data/stack.json` and used for `.data/logs/<name>.log`. */
export const SERVICE = {
  temporal: 'temporal',
  s3: 's3',
  judge: 'judge',
  /** The judge server (stance_server.py or llama.cpp) the judge process starts in a process group of its own. */
  judgeServer: 'judge-server',
  workerCpu: 'worker-cpu',
  workerGpu: 'worker-gpu',
} as const;
export type ServiceName = (typeof SERVICE)[keyof typeof SERVICE];

/** Worker roles, passed to `worker/main.ts` as `VALUEDRIFT_WORKER_ROLE`. */
export const WORKER_ROLES = ['cpu', 'gpu'] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];
