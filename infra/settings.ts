/**
 * The infra scripts' settings (the local stack, `npm test`, `npm run demo`, the judge tools): every
 * environment variable they read, read here once and checked with zod, each default in one place.
 * Nothing else under infra/ reads `process.env` (handing an environment to a child process aside).
 * Defaults the worker shares (bucket, region, namespace, Temporal's ports) come from
 * common/defaults.ts.
 *
 * Each address, port and directory can be moved, e.g. to run a second stack beside the first:
 *
 *   VALUEDRIFT_DATA_DIR=/tmp/stack2 VALUEDRIFT_TEMPORAL_PORT=7300 VALUEDRIFT_TEMPORAL_UI_PORT=8300 \
 *   VALUEDRIFT_S3_PORT=9300 VALUEDRIFT_JUDGE_PORT=8388 npx tsx infra/dev.ts up
 *
 * The S3 credentials are not secrets: the local S3 server (infra/s3server) accepts any key pair; these fixed
 * ones only make the local stack look like a real endpoint to the AWS SDK.
 */
import path from 'node:path';

import { z } from 'zod';

import {
  DEFAULT_LOCAL_HOST,
  DEFAULT_S3_BUCKET,
  DEFAULT_S3_REGION,
  DEFAULT_TEMPORAL_NAMESPACE,
  DEFAULT_TEMPORAL_PORT,
  DEFAULT_TEMPORAL_UI_PORT,
} from '../common/defaults';
import { DEFAULT_LOCAL_JUDGE_KIND, LOCAL_JUDGE_ENV, LOCAL_JUDGE_MODELS, type LocalJudgeKind, parseLocalJudgeKind } from './judge/kinds';

/** The repository root: this file sits in `<root>/infra/`. */
export const REPO_ROOT = path.resolve(__dirname, '..');

/** Where the browser test finds Chromium: Debian's package (test tools cannot download their own). */
export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

// A typo in a port must fail here, naming the variable, not later as "connection refused".
const port = z.coerce.number().int().min(1).max(65535);

const InfraEnv = z.object({
  /** Everything the stack writes (state, logs, stack.json/stack.env). Relative: against the current directory. */
  VALUEDRIFT_DATA_DIR: z.string().default(path.join(REPO_ROOT, '.data')),
  /** Loopback: the local stack has no authentication, so it must never listen on a public interface. */
  VALUEDRIFT_LOCAL_HOST: z
    .string()
    .regex(/^127(\.\d{1,3}){3}$/, 'the local stack listens on loopback only (127.x.x.x): it has no authentication')
    .default(DEFAULT_LOCAL_HOST),
  VALUEDRIFT_TEMPORAL_PORT: port.default(DEFAULT_TEMPORAL_PORT),
  VALUEDRIFT_TEMPORAL_UI_PORT: port.default(DEFAULT_TEMPORAL_UI_PORT),
  VALUEDRIFT_TEMPORAL_NAMESPACE: z.string().default(DEFAULT_TEMPORAL_NAMESPACE),
  VALUEDRIFT_S3_PORT: port.default(9000),
  VALUEDRIFT_S3_BUCKET: z.string().min(3).default(DEFAULT_S3_BUCKET),
  VALUEDRIFT_S3_REGION: z.string().default(DEFAULT_S3_REGION),
  VALUEDRIFT_JUDGE_PORT: port.default(8088),
  /** Which local judge the stack serves: `minilm` (the MiniLM stance classifier) or `smollm2` (llama.cpp, at chance). */
  VALUEDRIFT_LOCAL_JUDGE: z.string().default(DEFAULT_LOCAL_JUDGE_KIND),
  /** The judge key for infra/judge/check.ts against a remote endpoint (a secret: from the environment only). */
  VALUEDRIFT_JUDGE_API_KEY: z.string().optional(),
  /** The Python that creates `.venv` (default: python3, then python). */
  VALUEDRIFT_BOOTSTRAP_PYTHON: z.string().optional(),
  /** The Chromium the browser test drives. */
  VALUEDRIFT_CHROMIUM: z.string().default(DEFAULT_CHROMIUM),
  /** pip's index settings: uv (infra/python.ts) does not read pip's configuration, so they are handed to it. */
  PIP_INDEX_URL: z.string().optional(),
  PIP_EXTRA_INDEX_URL: z.string().optional(),
  PIP_FIND_LINKS: z.string().optional(),
});

export interface InfraSettings {
  repoRoot: string;
  dataDir: string;
  localHost: string;
  temporalPort: number;
  temporalUiPort: number;
  temporalNamespace: string;
  temporalAddress: string;
  temporalUiUrl: string;
  s3Port: number;
  s3Endpoint: string;
  s3Bucket: string;
  s3Region: string;
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  judgePort: number;
  judgeBaseUrl: string;
  localJudgeKind: LocalJudgeKind;
  /** The name the local judge server answers to (what `model` must be in a request): follows the kind. */
  judgeModel: string;
  /** The local judge ignores the key; the OpenAI client refuses to start without one. */
  localJudgeApiKey: string;
  judgeApiKey: string | undefined;
  bootstrapPython: string | undefined;
  chromium: string;
  /** pip's index URL, extra index URLs and find-links locations, as set in the environment. */
  pipIndex: { indexUrl: string | undefined; extraIndexUrls: string[]; findLinks: string[] };
}

/** Parses an environment (empty values count as unset). Throws naming the variable and the value. */
export function parseInfraSettings(env: Readonly<Record<string, string | undefined>>): InfraSettings {
  const set = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = InfraEnv.safeParse(set);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? '?');
    throw new Error(`${name}=${JSON.stringify(set[name])}: ${issue?.message ?? 'invalid'}`);
  }
  const e = parsed.data;
  const host = e.VALUEDRIFT_LOCAL_HOST;
  // The kinds' own parser names the choices in its message.
  const kind = parseLocalJudgeKind(e.VALUEDRIFT_LOCAL_JUDGE.trim(), LOCAL_JUDGE_ENV);
  return {
    repoRoot: REPO_ROOT,
    dataDir: path.resolve(e.VALUEDRIFT_DATA_DIR),
    localHost: host,
    temporalPort: e.VALUEDRIFT_TEMPORAL_PORT,
    temporalUiPort: e.VALUEDRIFT_TEMPORAL_UI_PORT,
    temporalNamespace: e.VALUEDRIFT_TEMPORAL_NAMESPACE,
    temporalAddress: `${host}:${e.VALUEDRIFT_TEMPORAL_PORT}`,
    temporalUiUrl: `http://${host}:${e.VALUEDRIFT_TEMPORAL_UI_PORT}`,
    s3Port: e.VALUEDRIFT_S3_PORT,
    s3Endpoint: `http://${host}:${e.VALUEDRIFT_S3_PORT}`,
    s3Bucket: e.VALUEDRIFT_S3_BUCKET,
    s3Region: e.VALUEDRIFT_S3_REGION,
    s3AccessKeyId: 'valuedrift-local',
    s3SecretAccessKey: 'valuedrift-local-secret',
    judgePort: e.VALUEDRIFT_JUDGE_PORT,
    judgeBaseUrl: `http://${host}:${e.VALUEDRIFT_JUDGE_PORT}/v1`,
    localJudgeKind: kind,
    judgeModel: LOCAL_JUDGE_MODELS[kind],
    localJudgeApiKey: 'local',
    judgeApiKey: e.VALUEDRIFT_JUDGE_API_KEY,
    bootstrapPython: e.VALUEDRIFT_BOOTSTRAP_PYTHON,
    chromium: e.VALUEDRIFT_CHROMIUM,
    pipIndex: {
      indexUrl: e.PIP_INDEX_URL,
      extraIndexUrls: (e.PIP_EXTRA_INDEX_URL ?? '').split(/\s+/).filter(Boolean),
      findLinks: (e.PIP_FIND_LINKS ?? '').split(/\s+/).filter(Boolean),
    },
  };
}

/** This process's settings, read once at first import. */
export const settings: InfraSettings = parseInfraSettings(process.env);

/**
 * The AWS SDK warns on every Node 20 process that its future releases need Node 22; this project
 * pins its SDK version and supports Node 20, so the warning is noise. Set for this process (the SDK
 * reads it when a client is made) and inherited by children.
 */
export function quietAwsSdkNodeWarning(): void {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
}
