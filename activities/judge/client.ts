/**
 * The judge's OpenAI client. It reads nothing from the environment: the worker reads
 * VALUEDRIFT_JUDGE_BASE_URL / VALUEDRIFT_JUDGE_API_KEY / VALUEDRIFT_JUDGE_MODEL and passes them in,
 * so secrets live in the worker's environment and never in workflow inputs or history.
 */
import OpenAI from 'openai';

/** The paper's judge (§3); its default is the spec's. */
export { DEFAULT_JUDGE_MODEL } from '../../common/spec';
/** Names of the worker environment variables the caller is expected to read. */
export const JUDGE_ENV = {
  baseURL: 'VALUEDRIFT_JUDGE_BASE_URL',
  apiKey: 'VALUEDRIFT_JUDGE_API_KEY',
  model: 'VALUEDRIFT_JUDGE_MODEL',
} as const;
/** Where the `openai` client goes when no base URL is configured: OpenAI's own API. */
export const DEFAULT_JUDGE_ENDPOINT = 'https://api.openai.com/v1';
/** One one-token completion is well under this even on a loaded provider; longer means a stuck connection. */
export const DEFAULT_JUDGE_TIMEOUT_MS = 60_000;

export interface JudgeClientOptions {
  /** Undefined → the OpenAI API. */
  baseURL?: string | undefined;
  /** Local OpenAI-compatible servers ignore the key but the client insists on one. */
  apiKey?: string | undefined;
  timeoutMs?: number | undefined;
}

export function createJudgeClient({ baseURL, apiKey, timeoutMs }: JudgeClientOptions): OpenAI {
  return new OpenAI({
    // An explicit value, so the SDK never falls back to OPENAI_BASE_URL / OPENAI_API_KEY behind our back.
    baseURL: baseURL ?? DEFAULT_JUDGE_ENDPOINT,
    apiKey: apiKey ?? 'unused-local-judge-key',
    // Nor attach an organisation/project from OPENAI_ORG_ID / OPENAI_PROJECT_ID meant for another tool.
    organization: null,
    project: null,
    timeout: timeoutMs ?? DEFAULT_JUDGE_TIMEOUT_MS,
    // Our backoff (retry.ts) is the only retry policy: testable, honours Retry-After, stops on abort.
    maxRetries: 0,
  });
}
