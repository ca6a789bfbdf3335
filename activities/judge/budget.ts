/**
 * The client side of the judge budget shared by all cpu workers (workflows/judgeBudget.ts): before
 * each judge request an activity asks the budget workflow of its endpoint + model for a grant, by
 * update-with-start (the first worker to ask starts it), and waits as long as it is told to. With
 * neither VALUEDRIFT_JUDGE_RPM nor VALUEDRIFT_JUDGE_TPM set there is no budget and nothing changes.
 *
 * Only counts and a hash of endpoint + model go to the workflow; limits come from this worker's
 * settings. Tokens are estimated before the call (prompt characters / 4, per-message overhead, the
 * completion's limit), which is what a provider's token limit counts against too.
 */
import { createHash } from 'node:crypto';
import { WithStartWorkflowOperation, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { TASK_QUEUES } from '../../common/config';
import type { AcquireAnswer, AcquireRequest, BudgetLimits, JudgeBudgetInput } from '../../workflows/judgeBudget';
import { abortReason, retryAfterMs, sleep } from './retry';

/** Names the workflow registers (workflows/judgeBudget.ts); strings, so no workflow code loads here. */
export const BUDGET_WORKFLOW_TYPE = 'judgeBudgetWorkflow';
export const BUDGET_ACQUIRE_UPDATE = 'acquire';
export const BUDGET_THROTTLED_SIGNAL = 'throttled';

export interface JudgeBudgetSettings {
  /** Requests per window across every worker; undefined = unlimited. */
  rpm?: number | undefined;
  /** Estimated tokens per window across every worker; undefined = unlimited. */
  tpm?: number | undefined;
  /** The window (ms); 60,000 matches providers' per-minute limits. */
  windowMs: number;
  /** The budget workflow completes after this long without a grant. */
  idleMs?: number | undefined;
  /** …and continues-as-new after this many grants. */
  maxGrantsPerRun?: number | undefined;
  /** Where the budget workflow runs; default the workflows queue every cpu worker polls. */
  taskQueue?: string | undefined;
  /**
   * Requests granted per Update (default `defaultGrantBlock(rpm)`: about a tenth of a second of the
   * request limit). A worker keeps what it was granted for at most `blockTtlMs` and hands it out to
   * its own judge calls; what it has not used by then is dropped, never carried into another window.
   */
  grantBlock?: number | undefined;
  blockTtlMs?: number | undefined;
}

/**
 * Requests per Update for a request limit: one Update to one workflow is tens of milliseconds and
 * Temporal admits only a few in flight per workflow, so asking per request caps a budget near 20
 * grants/s (bench/judgeBudget.ts); asking for a tenth of a second of the limit at a time keeps a
 * 10,000-RPM budget to about ten Updates a second.
 */
export function defaultGrantBlock(rpm: number | undefined): number {
  return rpm === undefined ? 1 : Math.max(1, Math.min(256, Math.floor(rpm / 600)));
}

export interface JudgeBudget {
  readonly workflowId: string;
  /**
   * Resolves once the budget grants `requests` and `tokens`, with the workflow time the grant counts
   * from; rejects only with the signal's reason or a malformed request.
   */
  acquire(req: { requests: number; tokens: number }, signal?: AbortSignal): Promise<{ at: number | undefined }>;
  /** Tells the budget the provider answered 429 (pauses grants for its Retry-After). Never throws. */
  throttled(retryAfterMs: number): Promise<void>;
  /** `inner` with every 429 response reported to `throttled` (for the OpenAI client's `fetch` option). */
  watch(inner: typeof globalThis.fetch): typeof globalThis.fetch;
}

/** The workflow id of an endpoint + model's budget: a hash, so neither appears in Temporal. */
export function judgeBudgetWorkflowId(endpoint: string, model: string): string {
  return `judge-budget-${createHash('sha256').update(`${endpoint}\n${model}`).digest('hex').slice(0, 24)}`;
}

/** A judge request's token estimate: prompt characters / 4, 4 per message, plus its completion limit. */
export function estimateTokens(body: { messages: ReadonlyArray<{ content?: unknown }>; max_tokens?: number | null; max_completion_tokens?: number | null }): number {
  let chars = 0;
  for (const m of body.messages) chars += typeof m.content === 'string' ? m.content.length : JSON.stringify(m.content ?? '').length;
  return Math.ceil(chars / 4) + 4 * body.messages.length + (body.max_completion_tokens ?? body.max_tokens ?? 1);
}

const Refusal = z.object({ granted: z.literal(false), retryAfterMs: z.number().nonnegative() });
const Answer = z.union([z.object({ granted: z.literal(true), at: z.number().optional() }), Refusal]);

/** The wait a validator's refusal asked for, or undefined when `err` is something else. */
function refusedFor(err: unknown): number | undefined {
  if (!(err instanceof WorkflowUpdateFailedError)) return undefined;
  const cause = err.cause;
  if (!(cause instanceof ApplicationFailure) || cause.type !== 'BudgetExhausted') return undefined;
  const parsed = Refusal.safeParse(cause.details?.[0]);
  return parsed.success ? parsed.data.retryAfterMs : undefined;
}

function isBadRequest(err: unknown): boolean {
  return err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure && err.cause.type === 'BadBudgetRequest';
}

/** Spreads waiters that were told the same time, so they do not all ask again in the same instant. */
function jittered(ms: number, random: () => number = Math.random): number {
  return Math.ceil(ms + random() * Math.min(250, ms * 0.1));
}

export function createJudgeBudget(client: Client, endpoint: string, model: string, settings: JudgeBudgetSettings): JudgeBudget {
  const workflowId = judgeBudgetWorkflowId(endpoint, model);
  const limits: BudgetLimits = { requests: settings.rpm, tokens: settings.tpm, windowMs: settings.windowMs };
  const start: JudgeBudgetInput = { idleMs: settings.idleMs ?? Math.max(10 * 60_000, 2 * settings.windowMs), maxGrantsPerRun: settings.maxGrantsPerRun ?? 1000 };
  const taskQueue = settings.taskQueue ?? TASK_QUEUES.workflows;
  const block = Math.max(1, settings.grantBlock ?? defaultGrantBlock(settings.rpm));
  const ttlMs = settings.blockTtlMs ?? Math.min(2_000, Math.floor(settings.windowMs / 20));
  /** Grants this worker holds for its own calls, and until when (its clock). */
  const reservoir = { requests: 0, tokens: 0, until: 0 };
  let refill: Promise<void> | undefined;

  const ask = async (req: AcquireRequest): Promise<AcquireAnswer> => {
    const answer = await client.workflow.executeUpdateWithStart(BUDGET_ACQUIRE_UPDATE, {
      args: [req],
      startWorkflowOperation: new WithStartWorkflowOperation(BUDGET_WORKFLOW_TYPE, {
        workflowId,
        taskQueue,
        args: [start],
        // Every worker's first ask meets the one running budget; after it idled out, a fresh one starts.
        workflowIdConflictPolicy: 'USE_EXISTING',
      }),
    });
    return Answer.parse(answer);
  };

  const budget: JudgeBudget = {
    workflowId,
    async acquire(req, signal) {
      if (block <= 1 || req.requests > 1) return askUntilGranted(req, signal);
      // Served from the block this worker holds; one refill at a time, which every caller waits on.
      for (;;) {
        if (signal?.aborted) throw abortReason(signal);
        if (Date.now() >= reservoir.until) Object.assign(reservoir, { requests: 0, tokens: 0 });
        if (reservoir.requests >= req.requests && reservoir.tokens >= req.tokens) {
          reservoir.requests -= req.requests;
          reservoir.tokens -= req.tokens;
          return { at: undefined };
        }
        refill ??= (async () => {
          const want = { requests: block, tokens: req.tokens * block };
          await askUntilGranted(want); // not one caller's signal: the block serves every waiter
          const until = Date.now() + ttlMs;
          // A refill that outlived the last block starts afresh; one still valid adds to it.
          if (Date.now() >= reservoir.until) Object.assign(reservoir, { requests: 0, tokens: 0 });
          Object.assign(reservoir, { requests: reservoir.requests + want.requests, tokens: reservoir.tokens + want.tokens, until });
        })().finally(() => {
          refill = undefined;
        });
        await (signal ? Promise.race([refill, abortable(signal)]) : refill);
      }
    },
    async throttled(ms) {
      // Grants held here were counted before the provider said no: drop them.
      Object.assign(reservoir, { requests: 0, tokens: 0, until: 0 });
      await client.workflow
        .getHandle(workflowId)
        .signal(BUDGET_THROTTLED_SIGNAL, { retryAfterMs: ms, now: Date.now() })
        .catch(() => undefined);
    },
    watch(inner) {
      return async (url, init) => {
        const res = await inner(url, init);
        if (res.status === 429) void budget.throttled(retryAfterMs(res.headers) ?? 1_000);
        return res;
      };
    },
  };

  async function askUntilGranted({ requests, tokens }: { requests: number; tokens: number }, signal?: AbortSignal): Promise<{ at: number | undefined }> {
      for (let failures = 0; ; ) {
        if (signal?.aborted) throw abortReason(signal);
        let wait: number;
        try {
          const req: AcquireRequest = { requests, tokens, limits, now: Date.now() };
          // A cancelled activity stops waiting on the Update's call too, not only between calls.
          const answer = await (signal ? client.withAbortSignal(signal, () => ask(req)) : ask(req));
          if (answer.granted) return { at: answer.at };
          wait = answer.retryAfterMs;
        } catch (err) {
          if (signal?.aborted) throw abortReason(signal);
          if (isBadRequest(err)) throw err;
          const refused = refusedFor(err);
          if (refused !== undefined) wait = refused;
          else {
            // The budget run was closing (continue-as-new, idle end) or Temporal is briefly away: ask again.
            failures++;
            wait = Math.min(5_000, 100 * 2 ** Math.min(failures, 6));
            if (failures % 10 === 1) console.error(`[judge budget] ${workflowId}: ${err instanceof Error ? err.message : String(err)}; asking again in ${wait} ms`);
          }
        }
        await sleep(jittered(wait), signal);
      }
  }
  return budget;
}

/** Rejects with the signal's reason once it aborts (never resolves). */
function abortable(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(abortReason(signal));
    else signal.addEventListener('abort', () => reject(abortReason(signal)), { once: true });
  });
}

/** The budget for an endpoint + model, or undefined when this worker sets no shared limits. */
export type JudgeBudgets = (endpoint: string, model: string) => JudgeBudget | undefined;

/** The budget settings of a worker environment (activities/env.ts); undefined when no limit is set. */
export function budgetSettingsOf(env: { VALUEDRIFT_JUDGE_RPM?: number | undefined; VALUEDRIFT_JUDGE_TPM?: number | undefined; VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS: number }): JudgeBudgetSettings | undefined {
  if (env.VALUEDRIFT_JUDGE_RPM === undefined && env.VALUEDRIFT_JUDGE_TPM === undefined) return undefined;
  return { rpm: env.VALUEDRIFT_JUDGE_RPM, tpm: env.VALUEDRIFT_JUDGE_TPM, windowMs: env.VALUEDRIFT_JUDGE_BUDGET_WINDOW_MS };
}

/** Budgets from this worker's settings (VALUEDRIFT_JUDGE_RPM / _TPM / _BUDGET_WINDOW_MS). */
export function judgeBudgets(client: Client, settings: () => JudgeBudgetSettings | undefined): JudgeBudgets {
  const made = new Map<string, JudgeBudget>();
  return (endpoint, model) => {
    const s = settings();
    if (s === undefined || (s.rpm === undefined && s.tpm === undefined)) return undefined;
    const key = JSON.stringify([endpoint, model, s]);
    let b = made.get(key);
    if (b === undefined) {
      b = createJudgeBudget(client, endpoint, model, s);
      made.set(key, b);
    }
    return b;
  };
}
