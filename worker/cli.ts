/**
 * `npm run lineage -- <command>`:
 *   validate <spec.json>               check a spec without starting anything
 *   start <spec.json> [--watch]        validate, start, print the workflow ID and UI link
 *   status <id|name> [--watch]         the lineage's progress (stages, checkpoints, step/total, loss)
 *   report <id|name> [--out DIR]       drift table and the report (copied to DIR, default .data/reports)
 *   export-history <id> <file.json>    the workflow's event history as JSON (for replay tests)
 *   drift <summaries.json|jsonl>       drift (M, η) from checkpoint summaries, as the system computes it
 *   judge-check [--file F] [--concurrency N]  a judge's agreement with the labelled stance set
 * Errors are one line on stderr and a non-zero exit code.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { REPO_ROOT, workerEnv } from '../activities/env';
import { computeStageDrift } from '../common/drift';
import { parseSummariesFile } from '../common/summariesFile';
import { formatDriftTable } from './driftTable';
import type { LineageResult } from '../workflows';
import { temporalClient } from './connection';
import {
  CliError,
  downloadReport,
  getProgress,
  readSpecFile,
  renderDriftRows,
  renderProgress,
  resolveWorkflowId,
  startLineage,
  uiLink,
} from './lineageClient';

const USAGE = `usage: npm run lineage -- <validate|start|status|report|export-history|drift|judge-check> ...`;

function flag(args: string[], name: string): boolean {
  const i = args.indexOf(name);
  if (i >= 0) args.splice(i, 1);
  return i >= 0;
}
function option(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  if (v === undefined || v.startsWith('--')) throw new CliError(`${name} needs a value`);
  args.splice(i, 2);
  return v;
}
function positional(args: string[], n: number, what: string): string[] {
  const unknown = args.find((a) => a.startsWith('--'));
  if (unknown) throw new CliError(`unknown option ${unknown}`);
  if (args.length !== n) throw new CliError(`expected ${what}`);
  return args;
}

async function watch(workflowId: string, everyMs = 3000): Promise<void> {
  const client = await temporalClient();
  for (;;) {
    const { progress, live } = await getProgress(client, workflowId);
    console.log(`\n[${new Date().toISOString()}]\n${renderProgress(progress, live)}`);
    if (progress.status === 'done' || progress.status === 'failed') return;
    const d = await client.workflow.getHandle(workflowId).describe();
    if (d.status.name !== 'RUNNING') return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...args] = argv;
  switch (cmd) {
    case 'validate': {
      const [file] = positional(args, 1, 'validate <spec.json>');
      const spec = await readSpecFile(file as string);
      console.log(`ok: lineage "${spec.name}", ${spec.stages.length} stage(s)`);
      return 0;
    }
    case 'start': {
      const doWatch = flag(args, '--watch');
      const [file] = positional(args, 1, 'start <spec.json> [--watch]');
      const raw: unknown = JSON.parse(await fs.readFile(file as string, 'utf8'));
      const spec = await readSpecFile(file as string);
      const client = await temporalClient();
      const { workflowId, alreadyRunning } = await startLineage(client, spec, raw);
      console.log(`${alreadyRunning ? 'already running' : 'started'}: ${workflowId}`);
      console.log(`ui: ${uiLink(workflowId)}`);
      if (doWatch) await watch(workflowId);
      return 0;
    }
    case 'status': {
      const doWatch = flag(args, '--watch');
      const [id] = positional(args, 1, 'status <workflow id or lineage name> [--watch]');
      const workflowId = resolveWorkflowId(id as string);
      if (doWatch) await watch(workflowId);
      else {
        const { progress, live } = await getProgress(await temporalClient(), workflowId);
        console.log(renderProgress(progress, live));
      }
      return 0;
    }
    case 'report': {
      const out = option(args, '--out') ?? path.join(REPO_ROOT, '.data', 'reports');
      const [id] = positional(args, 1, 'report <workflow id or lineage name> [--out DIR]');
      const workflowId = resolveWorkflowId(id as string);
      const client = await temporalClient();
      const handle = client.workflow.getHandle(workflowId);
      const d = await handle.describe().catch((err: unknown) => {
        if (err instanceof WorkflowNotFoundError) throw new CliError(`no lineage workflow ${workflowId}`);
        throw err;
      });
      if (d.status.name === 'RUNNING') throw new CliError(`${workflowId} is still running; see: npm run lineage -- status ${id}`);
      let result: LineageResult;
      try {
        result = (await handle.result()) as LineageResult;
      } catch (err) {
        if (err instanceof WorkflowFailedError) throw new CliError(`${workflowId} failed: ${err.cause?.message ?? err.message}`);
        throw err;
      }
      console.log(renderDriftRows(result));
      console.log(`report: ${result.report.uri}`);
      console.log(`local copy: ${await downloadReport(result, out)}`);
      return 0;
    }
    case 'export-history': {
      const [id, file] = positional(args, 2, 'export-history <workflow id> <file.json>');
      const client = await temporalClient();
      const workflowId = resolveWorkflowId(id as string);
      const history = await client.workflow.getHandle(workflowId).fetchHistory();
      const { historyToJSON } = await import('@temporalio/common/lib/proto-utils');
      await fs.writeFile(file as string, historyToJSON(history));
      console.log(`wrote ${history.events?.length ?? 0} events of ${workflowId} to ${file}`);
      return 0;
    }
    case 'drift': {
      const [file] = positional(args, 1, 'drift <summaries file>');
      const summaries = parseSummariesFile(await fs.readFile(file as string, 'utf8'));
      const byStage = new Map<string, typeof summaries>();
      for (const s of summaries) byStage.set(`${s.lineage}/${s.stageId}`, [...(byStage.get(`${s.lineage}/${s.stageId}`) ?? []), s]);
      console.log(formatDriftTable([...byStage.values()].map((list) => computeStageDrift({ summaries: list }))));
      return 0;
    }
    case 'judge-check': {
      const file = option(args, '--file') ?? path.join(REPO_ROOT, 'data', 'stance', 'labelled.jsonl');
      const concurrency = Number(option(args, '--concurrency') ?? 4);
      positional(args, 0, 'judge-check [--file F] [--concurrency N]');
      const env = workerEnv();
      if (!env.VALUEDRIFT_JUDGE_BASE_URL && !process.env.OPENAI_API_KEY) {
        throw new CliError('no judge endpoint: set VALUEDRIFT_JUDGE_BASE_URL (and VALUEDRIFT_JUDGE_API_KEY), or run npm run dev:up for the local judge');
      }
      const { createJudgeClient } = await import('../activities/judge/client');
      const { runJudgeCheck, formatJudgeCheck } = await import('../activities/judge/check');
      const client = createJudgeClient({ baseURL: env.VALUEDRIFT_JUDGE_BASE_URL, apiKey: env.VALUEDRIFT_JUDGE_API_KEY ?? process.env.OPENAI_API_KEY ?? 'unset' });
      const model = env.VALUEDRIFT_JUDGE_MODEL ?? 'gpt-4o';
      const result = await runJudgeCheck({ client, model, file, concurrency });
      console.log(formatJudgeCheck(result));
      return 0;
    }
    default:
      throw new CliError(cmd ? `unknown command "${cmd}"\n${USAGE}` : USAGE);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      const msg = err instanceof CliError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      console.error(`error: ${msg.split('\n')[0]}`);
      process.exit(1);
    },
  );
}
