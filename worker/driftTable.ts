/**
 * The drift table as a terminal prints it (`lineage drift`): one row per stage × topic × stance.
 * Format in docs/drift-format.md ("Terminal table"); the numbers come from common/drift.ts.
 */
import { STANCES, type StageDrift } from '../common/contracts';
import { compareCodeUnits, formatSigned } from '../common/drift';

const HEADER = ['stage', 'topic', 'stance', 'M', 'η', 'steps'];
/** Right-aligned columns (M and η), so signs and decimals line up. */
const NUMERIC = new Set([3, 4]);

/** A plain-text table (stage, topic, stance, M, η, steps spanned), ending in a newline. */
export function formatDriftTable(drifts: readonly StageDrift[]): string {
  const rows: string[][] = [];
  for (const d of drifts) {
    for (const category of Object.keys(d.topics).sort(compareCodeUnits)) {
      const entry = d.topics[category];
      if (!entry) continue;
      for (const stance of STANCES) {
        const sd = entry.stances[stance];
        const from = sd.trajectory[0]?.step ?? 0;
        const to = sd.trajectory[sd.trajectory.length - 1]?.step ?? 0;
        rows.push([d.stageId, category, stance, formatSigned(sd.M), sd.eta.toFixed(2), `${from}..${to}`]);
      }
    }
  }
  const widths = HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (NUMERIC.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  if (rows.length === 0) return `${line(HEADER)}\n${rule}\n(no topics with labelled generations)\n`;
  return `${[line(HEADER), rule, ...rows.map(line)].join('\n')}\n`;
}
