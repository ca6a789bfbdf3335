/**
 * The summaries file format: what `lineage drift` reads and what the system writes beside each
 * stage's drift.json (`summaries.jsonl`). Accepted shapes and error messages are documented in
 * docs/drift-format.md ("Summaries files"). Pure module: it only parses text and validates it
 * against the CheckpointSummary contract; the maths lives in common/drift.ts.
 */
import { z } from 'zod';
import { CheckpointSummary } from './contracts';

const SummariesEnvelope = z.object({ summaries: z.array(z.unknown()) });

/**
 * Reads a summaries file: a JSON array of CheckpointSummary, `{ "summaries": [...] }`, a single
 * summary.json object, or JSONL (one summary per non-blank line). Every entry is validated against
 * the contract; errors name the entry (and for JSONL the line) and the field path.
 */
export function parseSummariesFile(text: string): CheckpointSummary[] {
  const body = text.replace(/^\uFEFF/, '');
  if (body.trim() === '') throw new Error('summaries file is empty');
  const trimmed = body.trimStart();

  let whole: unknown;
  let wholeError: string | undefined;
  try {
    whole = JSON.parse(body);
  } catch (err) {
    wholeError = errorMessage(err);
  }

  if (wholeError === undefined) {
    if (Array.isArray(whole)) return whole.map((entry, i) => validateSummary(entry, `entry ${i}`));
    if (isRecord(whole) && 'summaries' in whole) {
      const env = SummariesEnvelope.safeParse(whole);
      if (!env.success) throw new Error(`summaries file: "summaries" must be an array`);
      return env.data.summaries.map((entry, i) => validateSummary(entry, `summaries[${i}]`));
    }
    if (isRecord(whole)) return [validateSummary(whole, 'the summary')];
    throw new Error('summaries file: expected a JSON array, an object, or JSON lines');
  }
  // A lone array or a multi-line JSON object that fails to parse is broken JSON, not JSONL.
  if (trimmed.startsWith('[')) throw new Error(`summaries file is not valid JSON: ${wholeError}`);

  const out: CheckpointSummary[] = [];
  const lines = body.split(/\r?\n/);
  lines.forEach((raw, i) => {
    if (raw.trim() === '') return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch (err) {
      // On the first entry we cannot tell a broken pretty-printed object from broken JSONL.
      const asWhole = out.length === 0 ? `; as one JSON document: ${wholeError}` : '';
      throw new Error(`summaries file line ${i + 1}: invalid JSON (${errorMessage(err)})${asWhole}`);
    }
    out.push(validateSummary(parsed, `line ${i + 1}`));
  });
  return out;
}

/**
 * One list per stage (`lineage/stageId`), in order of first appearance: a file may hold several
 * stages, and computeStageDrift takes one stage at a time.
 */
export function groupSummariesByStage(summaries: readonly CheckpointSummary[]): CheckpointSummary[][] {
  const byStage = new Map<string, CheckpointSummary[]>();
  for (const s of summaries) {
    // JSON of the pair, so a "/" inside a lineage name cannot merge two stages.
    const key = JSON.stringify([s.lineage, s.stageId]);
    const list = byStage.get(key);
    if (list) list.push(s);
    else byStage.set(key, [s]);
  }
  return [...byStage.values()];
}

function validateSummary(value: unknown, where: string): CheckpointSummary {
  const result = CheckpointSummary.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const path = issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
    return `${path}: ${issue.message}`;
  });
  throw new Error(`summaries file ${where}: ${problems.join('; ')}`);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
