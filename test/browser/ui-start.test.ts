/**
 * A lineage started by hand from the Temporal Web UI's "Start Workflow" form runs like one started
 * from the CLI: one JSON argument (the spec), on the workflows queue, under the lineage's workflow ID.
 *
 * Needs the local stack (Temporal dev server with its UI, the S3 server; `npm test` or
 * `npm run dev:up` brings it up and writes `.data/stack.env`) and Debian's Chromium at
 * /usr/bin/chromium (VALUEDRIFT_CHROMIUM): `npm test` installs it as root; without it this test
 * skips, saying what is missing and how to get it. Workers run in this process against the stack's
 * server, with the test doubles for training, generation and the judge. Workers started by `npm run dev:up` may poll the same
 * queues and take some of the tasks; the workflow ID is unique, so the outcome is the same.
 */
import * as path from 'node:path';
import { Client, Connection, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Activities } from '../../activities';
import { TASK_QUEUES, workflowIds } from '../../common/config';
import { DEFAULT_TEMPORAL_NAMESPACE, DEFAULT_TEMPORAL_UI_URL } from '../../common/defaults';
import type { LineageResult } from '../../workflows';
import { chromiumMissing } from '../../infra/chromium';
import { launchBrowser, screenshotDir, type BrowserSession } from '../support/browser';
import { fakeActivities, loadStackEnv, recorder, stage, testSpec, uniqueName, workflowBundle, type FakeTrainingPlan } from '../support/workflowEnv';

const RESULT_TIMEOUT_MS = 120_000;
/** The UI starts the workflow with an API call after the click; it must exist by then. */
const APPEAR_TIMEOUT_MS = 30_000;

let connection: Connection | undefined;
let nativeConnection: NativeConnection | undefined;
let client: Client;
let namespace: string;
let uiUrl: string;

/**
 * fakeActivities reads only `env.client` from its TestWorkflowEnvironment; against the stack there
 * is no test environment, so hand it the stack's client and fail loudly if it ever reads more.
 */
function stackEnv(stackClient: Client): TestWorkflowEnvironment {
  const adapter = new Proxy(
    { client: stackClient },
    {
      get(target, prop) {
        if (prop === 'client') return target.client;
        if (prop === 'then') return undefined; // not a thenable
        throw new Error(`fakeActivities read env.${String(prop)}: only env.client is available against the local stack`);
      },
    },
  );
  return adapter as unknown as TestWorkflowEnvironment;
}

/**
 * Runs `fn` while in-process workers serve the three queues on the stack's server. Each worker is
 * created and run inside the previous one's runUntil, so every worker that was created is shut down
 * (and drained) however `fn` or a later Worker.create ends.
 */
async function withStackWorkers<T>(conn: NativeConnection, activities: Activities, fn: () => Promise<T>): Promise<T> {
  const workflowBundleCode = await workflowBundle();
  const common = { connection: conn, namespace };
  const options: WorkerOptions[] = [
    { ...common, taskQueue: TASK_QUEUES.workflows, workflowBundle: workflowBundleCode },
    { ...common, taskQueue: TASK_QUEUES.cpu, activities, maxConcurrentActivityTaskExecutions: 8 },
    { ...common, taskQueue: TASK_QUEUES.gpu, activities, maxConcurrentActivityTaskExecutions: 4 },
  ];
  const nest = async (rest: WorkerOptions[]): Promise<T> => {
    const [first, ...others] = rest;
    if (!first) return fn();
    const worker = await Worker.create(first);
    return worker.runUntil(() => nest(others));
  };
  return nest(options);
}

async function screenshot(page: Page, name: string): Promise<string> {
  const file = path.join(screenshotDir(), name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Fills and submits the UI's Start Workflow form; returns the screenshot of the filled form. */
async function startFromUi(page: Page, f: { workflowId: string; taskQueue: string; workflowType: string; input: unknown; shot: string }): Promise<string> {
  await page.goto(`${uiUrl}/namespaces/${encodeURIComponent(namespace)}/workflows/start-workflow`, { waitUntil: 'domcontentloaded' });
  await expect.poll(() => page.getByRole('heading', { name: 'Start Workflow' }).isVisible(), { timeout: 30_000, message: 'the Start Workflow form did not load' }).toBe(true);

  const workflowId = page.getByRole('textbox', { name: 'Workflow ID' });
  const taskQueue = page.getByRole('textbox', { name: 'Task Queue' });
  const workflowType = page.getByRole('textbox', { name: 'Workflow Type' });
  const data = page.getByRole('textbox', { name: 'Data' }); // a code editor (contenteditable)
  const json = page.getByRole('radio', { name: 'json/plain' });
  const start = page.getByRole('button', { name: 'Start Workflow' });

  await workflowId.fill(f.workflowId);
  await taskQueue.fill(f.taskQueue);
  await workflowType.fill(f.workflowType);
  await data.fill(JSON.stringify(f.input));
  // The editor pretty-prints its JSON when it loses focus, which moves the button below it: let it
  // do so before anything else is clicked.
  await data.blur();
  await json.check();

  // What the form holds now is what gets sent: check it before starting.
  expect(await workflowId.inputValue()).toBe(f.workflowId);
  expect(await taskQueue.inputValue()).toBe(f.taskQueue);
  expect(await workflowType.inputValue()).toBe(f.workflowType);
  const editorJson = async (): Promise<unknown> => {
    try {
      return JSON.parse(await data.innerText()) as unknown;
    } catch {
      return undefined; // mid-reformat, or not JSON at all
    }
  };
  await expect.poll(editorJson, { message: 'the Data editor does not hold the input' }).toEqual(f.input);
  expect(await json.isChecked()).toBe(true);
  const shot = await screenshot(page, f.shot);

  await expect.poll(() => start.isEnabled(), { timeout: 10_000, message: 'the Start Workflow button stayed disabled with the form filled' }).toBe(true);
  await start.click();
  return shot;
}

/** The UI's start is asynchronous to the click: wait until the server knows the workflow. */
async function waitForWorkflow(handle: WorkflowHandle, page: Page, shotName: string): Promise<void> {
  const deadline = Date.now() + APPEAR_TIMEOUT_MS;
  for (;;) {
    try {
      await handle.describe();
      return;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
    if (Date.now() > deadline) {
      const shot = await screenshot(page, shotName).catch(() => '(no screenshot)');
      const text = await page.locator('body').innerText().catch(() => '');
      throw new Error(`${handle.workflowId} was not started ${APPEAR_TIMEOUT_MS / 1000}s after clicking Start Workflow (see ${shot}); the page said:\n${text.slice(0, 2000)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function resultWithin(handle: WorkflowHandle, ms: number): Promise<LineageResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${handle.workflowId} did not complete within ${ms / 1000}s`)), ms);
  });
  try {
    return (await Promise.race([handle.result(), timeout])) as LineageResult;
  } finally {
    clearTimeout(timer);
  }
}

// Decided while the file is collected, so that a missing browser skips the test (and its stack
// setup) with a message in the output instead of failing it.
const chromiumProblem = chromiumMissing();
if (chromiumProblem !== null) console.warn(`[ui-start] SKIPPED: ${chromiumProblem}`);

describe.skipIf(chromiumProblem !== null)('Temporal UI start form', () => {
  beforeAll(async () => {
    // Worker state changes are logged at INFO; this file runs in its own process (pool: forks).
    Runtime.install({ logger: new DefaultLogger('WARN') });
    loadStackEnv();
    const address = process.env.TEMPORAL_ADDRESS;
    if (!address) throw new Error('TEMPORAL_ADDRESS is not set and .data/stack.env is missing: bring the stack up (npm run dev:up)');
    namespace = process.env.TEMPORAL_NAMESPACE ?? DEFAULT_TEMPORAL_NAMESPACE;
    uiUrl = (process.env.TEMPORAL_UI_URL ?? DEFAULT_TEMPORAL_UI_URL).replace(/\/+$/, '');
    connection = await Connection.connect({ address, connectTimeout: 10_000 });
    client = new Client({ connection, namespace });
    nativeConnection = await NativeConnection.connect({ address });
    await workflowBundle(); // built here, under the hook's longer timeout
  });

  afterAll(async () => {
    await nativeConnection?.close();
    await connection?.close();
  });

  it('starts a lineage from the UI that runs like one started from the CLI', { timeout: 240_000 }, async () => {
    const name = uniqueName('ui-start');
    const workflowId = workflowIds.lineage(name);
    const spec = testSpec(name, [stage.sft('sft', { seed: Math.floor(Math.random() * 1e9) })]); // unique config → not cached
    const rec = recorder();
    const plan = (): FakeTrainingPlan => ({ steps: [2, 4] });
    const activities = fakeActivities(stackEnv(client), rec, plan);

    let browser: BrowserSession | undefined;
    try {
      browser = await launchBrowser({ viewport: { width: 1400, height: 1700 } }); // tall enough to show the whole form
      const page = browser.page;
      const { result, shot } = await withStackWorkers(nativeConnection!, activities, async () => {
        const filled = await startFromUi(page, { workflowId, taskQueue: TASK_QUEUES.workflows, workflowType: 'lineageWorkflow', input: spec, shot: `${name}-form.png` });
        const handle = client.workflow.getHandle(workflowId);
        await waitForWorkflow(handle, page, `${name}-after-start.png`);
        return { result: await resultWithin(handle, RESULT_TIMEOUT_MS), shot: filled };
      });
      console.log(`[ui-start] filled form: ${shot}`);

      expect(result.lineage).toBe(name);
      expect(result.stages.map((s) => s.stageId)).toEqual(['sft']);
      const sft = result.stages[0]!;
      expect(sft.cached).toBe(false);
      expect(sft.totalSteps).toBe(4);
      expect(sft.finalCheckpoint).toContain(`lineages/${name}/sft/checkpoints/step-4`);
      expect(sft.drift?.uri).toMatch(new RegExp(`lineages/${name}/sft/drift\\.json$`));
      expect(sft.driftRows.length).toBeGreaterThan(0);
      expect(result.report.uri).toMatch(new RegExp(`lineages/${name}/report/index\\.html$`));

      // Exactly one argument, plain JSON, equal to the spec: what the CLI passes too.
      const history = await client.workflow.getHandle(workflowId).fetchHistory();
      const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
      expect(started?.workflowType?.name).toBe('lineageWorkflow');
      expect(started?.taskQueue?.name).toBe(TASK_QUEUES.workflows);
      expect(started?.identity ?? '').not.toBe(client.options.identity); // started by the UI, not by this process
      const payloads = started?.input?.payloads ?? [];
      expect(payloads).toHaveLength(1);
      const encoding = Buffer.from(payloads[0]!.metadata?.encoding ?? new Uint8Array()).toString('utf8');
      expect(encoding).toBe('json/plain');
      expect(defaultPayloadConverter.fromPayload(payloads[0]!)).toEqual(spec);
    } catch (err) {
      if (browser) await screenshot(browser.page, `${name}-failure.png`).then((f) => console.log(`[ui-start] page at failure: ${f}`), () => undefined);
      throw err;
    } finally {
      await browser?.close();
    }
  });
});
