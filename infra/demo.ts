/**
 * `npm run demo`: the main job on the embedded default. Sets up the Python environment and the
 * local stack (Temporal dev server, S3-compatible server, local judge, workers), starts
 * specs/demo.json, shows progress while it runs, and ends with the drift table, the report's
 * location and the UI link. The stack stays up afterwards so the UI can be browsed
 * (`npm run dev:down` stops it).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { resetWorkerEnv } from '../activities/env';
import type { LineageResult } from '../workflows';
import { cliSettings } from '../worker/cliSettings';
import { temporalClient } from '../worker/connection';
import { downloadReport, getProgress, progressView, readSpecFile, renderDriftRows, startLineage, uiLink } from '../worker/lineageClient';
import { progressPrinter } from '../worker/progress';
import { DATA } from './paths';
import { ensurePythonEnv } from './python';
import { ensureS3Server } from './services/s3';
import { REPO_ROOT, quietAwsSdkNodeWarning } from './settings';
import { stackUp } from './stack';

quietAwsSdkNodeWarning();

const t0 = Date.now();
const elapsed = () => `${Math.round((Date.now() - t0) / 1000)}s`;
const log = (line: string) => console.log(`[demo ${elapsed()}] ${line}`);

async function main(): Promise<void> {
  const specFile = process.argv[2] ?? path.join(REPO_ROOT, 'specs', 'demo.json');
  const spec = await readSpecFile(specFile);
  log('preparing the Python environment (first run: several minutes)');
  // The local S3 server's Go build runs while pip works (both are no-ops once done).
  await Promise.all([ensurePythonEnv({ log }), ensureS3Server({ log })]);
  log('starting the local stack: Temporal dev server, S3 server, judge, workers');
  const up = await stackUp({ workers: true, judge: true, log });
  // This process is the stack's client: its CLI settings (Temporal) and worker settings (the store,
  // for the report) must name the stack just started, whatever the shell had; both modules read the
  // environment at first use (resetWorkerEnv drops a cached read).
  // eslint-disable-next-line no-restricted-syntax -- points this process's own settings at the stack, read by their modules
  Object.assign(process.env, up.env);
  resetWorkerEnv();

  const client = await temporalClient(cliSettings());
  const raw: unknown = JSON.parse(fs.readFileSync(specFile, 'utf8'));
  const { workflowId, alreadyRunning } = await startLineage(client, spec, raw);
  log(`${alreadyRunning ? 'attached to running' : 'started'} lineage ${workflowId}`);
  log(`Temporal UI: ${uiLink(workflowId)}`);

  // On a terminal one line per stage, redrawn in place; in a log, time-stamped lines on change.
  const printer = progressPrinter(process.stdout.isTTY ? { columns: () => process.stdout.columns } : undefined);
  const handle = client.workflow.getHandle(workflowId);
  const resultPromise = handle.result() as Promise<LineageResult>;
  let finished = false;
  void resultPromise.then(
    () => (finished = true),
    () => (finished = true),
  );
  while (!finished) {
    try {
      const { progress, live } = await getProgress(client, workflowId);
      const text = printer.update(progressView(workflowId, progress, live), Date.now());
      if (text) process.stdout.write(text);
    } catch {
      // The first query can race the workflow's first task; the next poll will answer.
    }
    await new Promise((r) => setTimeout(r, 3000));
  }
  let result: LineageResult;
  try {
    result = await resultPromise;
  } catch (err) {
    const cause = err instanceof WorkflowFailedError ? (err.cause?.message ?? err.message) : String(err);
    console.error(`\n[demo ${elapsed()}] the lineage failed: ${cause}`);
    console.error(`see ${uiLink(workflowId)} and the logs in .data/logs/`);
    process.exitCode = 1;
    return;
  }
  console.log(`\nDrift per stage, topic and stance (M = v_end − v_start, eta = drift time):\n`);
  console.log(renderDriftRows(result));
  const local = await downloadReport(result, path.join(DATA.dataDir, 'reports'));
  console.log(`\nreport: ${result.report.uri}`);
  console.log(`report (local copy): ${local}`);
  console.log(`Temporal UI: ${uiLink(workflowId)}`);
  console.log(`done in ${elapsed()}; the stack keeps running for the UI — stop it with: npm run dev:down`);
  await client.connection.close();
}

main().catch((err: unknown) => {
  console.error(`[demo] error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
