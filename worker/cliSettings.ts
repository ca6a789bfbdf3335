/**
 * The CLI's settings (`npm run lineage`, and the demo, which drives a lineage the same way): every
 * environment variable the client side reads (Temporal, the store for `report`, the judge for
 * `judge-check`), read here once and checked with zod, each default in one place. Nothing else in
 * worker/cli.ts, worker/lineageClient.ts or worker/connection.ts reads `process.env`. Defaults
 * shared with the worker and the stack scripts come from common/defaults.ts.
 *
 * The keys keep the variables' names, so one object serves both as documentation of what was read
 * and as the TemporalConnectionSettings that worker/connection.ts takes (the worker's settings,
 * activities/env.ts, have the same keys).
 */
import * as path from 'node:path';
import { z } from 'zod';
import { DEFAULT_JUDGE_MODEL } from '../common/spec';
import { DEFAULT_S3_REGION, DEFAULT_TEMPORAL_ADDRESS, DEFAULT_TEMPORAL_NAMESPACE, DEFAULT_TEMPORAL_UI_URL } from '../common/defaults';
import { CliError } from './cliArgs';

/** The repository root: this file sits in `<root>/worker/`. */
const REPO_ROOT = path.resolve(__dirname, '..');

const CliEnv = z
  .object({
    TEMPORAL_ADDRESS: z.string().default(DEFAULT_TEMPORAL_ADDRESS),
    TEMPORAL_NAMESPACE: z.string().default(DEFAULT_TEMPORAL_NAMESPACE),
    /** Where the links the CLI prints point. */
    TEMPORAL_UI_URL: z.string().url().default(DEFAULT_TEMPORAL_UI_URL),
    /** mTLS client certificate and key files (self-hosted or Temporal Cloud): both or neither. */
    TEMPORAL_TLS_CERT: z.string().optional(),
    TEMPORAL_TLS_KEY: z.string().optional(),
    /** Temporal Cloud API key (TLS is turned on with it). */
    TEMPORAL_API_KEY: z.string().optional(),
    /**
     * `report` reads the report from the store: the bucket is in its URI; credentials come from the
     * AWS SDK's default chain (AWS_ACCESS_KEY_ID…, profiles, instance roles), as on the worker.
     */
    VALUEDRIFT_S3_ENDPOINT: z.string().url().optional(),
    VALUEDRIFT_S3_REGION: z.string().default(DEFAULT_S3_REGION),
    VALUEDRIFT_S3_FORCE_PATH_STYLE: z.enum(['true', 'false']).default('false'),
    /** `judge-check`: an OpenAI-compatible endpoint; unset means the OpenAI API itself. */
    VALUEDRIFT_JUDGE_BASE_URL: z.string().url().optional(),
    VALUEDRIFT_JUDGE_API_KEY: z.string().optional(),
    /** OpenAI's own key: the judge key for the OpenAI API (no base URL) when VALUEDRIFT_JUDGE_API_KEY is unset; never sent elsewhere. */
    OPENAI_API_KEY: z.string().optional(),
    VALUEDRIFT_JUDGE_MODEL: z.string().default(DEFAULT_JUDGE_MODEL),
    /** `status --watch` and `start --watch`: how often progress is read. */
    VALUEDRIFT_WATCH_INTERVAL_MS: z.coerce.number().int().min(100).default(3000),
  })
  .refine((e) => (e.TEMPORAL_TLS_CERT === undefined) === (e.TEMPORAL_TLS_KEY === undefined), {
    message: 'set both TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY, or neither',
    path: ['TEMPORAL_TLS_CERT'],
  });

export type CliSettings = z.infer<typeof CliEnv> & {
  /** `report`'s default --out. */
  reportsDir: string;
  /** `judge-check`'s default --file: the project's labelled stance set. */
  labelledStanceFile: string;
};

/** Parses an environment (empty values count as unset). Throws a CliError naming the variable. */
export function parseCliSettings(env: Readonly<Record<string, string | undefined>>): CliSettings {
  const set = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = CliEnv.safeParse(set);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue?.path[0] ?? '?');
    // Values are not echoed: some of these variables hold secrets.
    throw new CliError(`environment variable ${name}: ${issue?.message ?? 'invalid'}`);
  }
  return {
    ...parsed.data,
    reportsDir: path.join(REPO_ROOT, '.data', 'reports'),
    labelledStanceFile: path.join(REPO_ROOT, 'data', 'stance', 'labelled.jsonl'),
  };
}

let cached: CliSettings | undefined;

/** This process's settings, read from the environment at first use. */
export function cliSettings(): CliSettings {
  cached ??= parseCliSettings(process.env);
  return cached;
}
