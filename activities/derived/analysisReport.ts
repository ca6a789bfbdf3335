/**
 * The dataset stance analysis's summary and HTML report (App. K), pure functions of the judged rows:
 *
 * - a chat (SFT) set (K.2): per topic, how many retained datapoints the judge reads as supporting,
 *   neutral or opposing (the argmax of its distribution), as shares, and the mean distribution;
 * - a preference or stance-pairs set (K.3/K.4): per pair, the Euclidean distance between the chosen
 *   and the rejected side's stance distributions (0 when they agree, √2 at most: all mass on
 *   different labels); a histogram of those distances over [0, √2] and, per topic and overall,
 *   their mean, the value gap.
 *
 * The page is one self-contained document under the lineage report's Content-Security-Policy: no
 * scripts, no remote loads, the plots inline SVG.
 */
import { z } from 'zod';
import { STANCES, StanceProbs, type Stance } from '../../common/contracts';
import { argmaxStance } from '../judge/parse';
import { CSS, documentHead, esc } from '../report/html';
import { STANCE_COLOURS } from '../report/figure';

/** The largest distance two stance distributions can be apart. */
export const MAX_DISTANCE = Math.SQRT2;
/** Histogram bins over [0, √2]. */
export const DISTANCE_BINS = 10;

const Probs = StanceProbs.nullable();
const Base = z.object({
  /** Line number of the datapoint in the analysed dataset. */
  index: z.number().int().nonnegative(),
  category: z.string(),
  topic: z.string(),
  /** The most similar eval question and its cosine similarity. */
  question: z.string(),
  similarity: z.number(),
});
/** A judged chat datapoint: one distribution for the whole conversation (null: the judge gave no label). */
export const JudgedConversation = Base.extend({ kind: z.literal('conversation'), probs: Probs });
/** A judged pair: one distribution per side, and their distance when both have one. */
export const JudgedPair = Base.extend({ kind: z.literal('pair'), chosen: Probs, rejected: Probs, distance: z.number().nullable() });
export const JudgedRow = z.discriminatedUnion('kind', [JudgedConversation, JudgedPair]);
export type JudgedRow = z.infer<typeof JudgedRow>;

export type StanceCounts = Record<Stance, number>;

export function euclidean(a: StanceProbs, b: StanceProbs): number {
  return Math.sqrt(STANCES.reduce((s, k) => s + (a[k] - b[k]) ** 2, 0));
}

export interface Bin {
  from: number;
  to: number;
  count: number;
}

/** Equal-width bins over [0, max]; the last bin includes `max`; values outside are clamped into range. */
export function histogram(values: readonly number[], bins = DISTANCE_BINS, max = MAX_DISTANCE): Bin[] {
  const width = max / bins;
  const out: Bin[] = Array.from({ length: bins }, (_, i) => ({ from: i * width, to: (i + 1) * width, count: 0 }));
  for (const v of values) {
    const i = Math.min(bins - 1, Math.max(0, Math.floor(v / width)));
    (out[i] as Bin).count++;
  }
  return out;
}

const zero = (): StanceCounts => ({ support: 0, neutral: 0, oppose: 0 });

/** Counts of argmax labels, their shares of the labelled rows, and the mean distribution. */
export interface Distribution {
  labelled: number;
  counts: StanceCounts;
  share: StanceCounts;
  mean: StanceCounts;
}

export function distribution(probs: ReadonlyArray<StanceProbs | null>): Distribution {
  const counts = zero();
  const sum = zero();
  let labelled = 0;
  for (const p of probs) {
    if (p === null) continue;
    labelled++;
    counts[argmaxStance(p)]++;
    for (const s of STANCES) sum[s] += p[s];
  }
  const per = (c: StanceCounts): StanceCounts => ({ support: labelled ? c.support / labelled : 0, neutral: labelled ? c.neutral / labelled : 0, oppose: labelled ? c.oppose / labelled : 0 });
  return { labelled, counts, share: per(counts), mean: per(sum) };
}

export interface TopicSummary {
  topic: string;
  /** Retained (and judged) datapoints under this topic. */
  rows: number;
  /** chat: the conversations; pairs: the chosen side. */
  stance: Distribution;
  /** pairs only: the rejected side. */
  rejected?: Distribution;
  /** pairs only: the mean distance of its pairs with both sides labelled (null: none), and how many. */
  valueGap?: number | null;
  pairs?: number;
}

export interface AnalysisSummary {
  format: 'chat' | 'preference' | 'stance-pairs';
  rows: number;
  unlabelled: number;
  topics: Record<string, TopicSummary>;
  /** pairs only. */
  distances?: { bins: Bin[]; valueGap: number | null; pairs: number };
}

const mean = (xs: readonly number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

export function summarise(format: AnalysisSummary['format'], rows: readonly JudgedRow[]): AnalysisSummary {
  const byCat = new Map<string, JudgedRow[]>();
  for (const r of rows) byCat.set(r.category, [...(byCat.get(r.category) ?? []), r]);
  const topics: Record<string, TopicSummary> = {};
  let unlabelled = 0;
  const all: number[] = [];
  for (const cat of [...byCat.keys()].sort()) {
    const rs = byCat.get(cat) as JudgedRow[];
    const topic = (rs[0] as JudgedRow).topic;
    if (format === 'chat') {
      const probs = rs.map((r) => (r.kind === 'conversation' ? r.probs : null));
      unlabelled += probs.filter((p) => p === null).length;
      topics[cat] = { topic, rows: rs.length, stance: distribution(probs) };
    } else {
      const pairs = rs.filter((r): r is z.infer<typeof JudgedPair> => r.kind === 'pair');
      unlabelled += pairs.filter((p) => p.distance === null).length;
      const ds = pairs.flatMap((p) => (p.distance === null ? [] : [p.distance]));
      all.push(...ds);
      topics[cat] = { topic, rows: rs.length, stance: distribution(pairs.map((p) => p.chosen)), rejected: distribution(pairs.map((p) => p.rejected)), valueGap: mean(ds), pairs: ds.length };
    }
  }
  const summary: AnalysisSummary = { format, rows: rows.length, unlabelled, topics };
  if (format !== 'chat') summary.distances = { bins: histogram(all), valueGap: mean(all), pairs: all.length };
  return summary;
}

// ------------------------------------------------------------------------------------------ HTML

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const num = (x: number | null | undefined, digits = 3): string => (x === null || x === undefined ? '–' : x.toFixed(digits));

/** One horizontal 100 % bar per topic, split support / neutral / oppose by share (Fig. 19's reading). */
export function stanceBarsSvg(rows: ReadonlyArray<{ label: string; d: Distribution }>, id: string): string {
  const labelW = 220;
  const barW = 420;
  const rowH = 26;
  const top = 8;
  const h = top + rows.length * rowH + 24;
  const parts: string[] = [];
  rows.forEach(({ label, d }, i) => {
    const y = top + i * rowH;
    parts.push(`<text x="${labelW - 8}" y="${y + 15}" text-anchor="end" font-size="12">${esc(label)} (n=${d.labelled})</text>`);
    let x = labelW;
    for (const s of STANCES) {
      const w = d.share[s] * barW;
      if (w > 0) {
        parts.push(`<rect class="bar ${s}" data-stance="${s}" data-share="${d.share[s].toFixed(4)}" x="${x.toFixed(2)}" y="${y + 3}" width="${w.toFixed(2)}" height="${rowH - 8}" fill="${STANCE_COLOURS[s]}"><title>${esc(label)}: ${s} ${pct(d.share[s])} (${d.counts[s]})</title></rect>`);
        if (w > 34) parts.push(`<text x="${(x + w / 2).toFixed(2)}" y="${y + 16}" text-anchor="middle" font-size="11" fill="#fff">${pct(d.share[s])}</text>`);
      }
      x += w;
    }
    if (d.labelled === 0) parts.push(`<text x="${labelW + 4}" y="${y + 15}" font-size="12" fill="#777">no labelled datapoint</text>`);
  });
  const axisY = top + rows.length * rowH + 4;
  parts.push(`<line x1="${labelW}" y1="${axisY}" x2="${labelW + barW}" y2="${axisY}" stroke="#999"/>`);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) parts.push(`<text x="${labelW + t * barW}" y="${axisY + 14}" text-anchor="middle" font-size="10" fill="#555">${t * 100}%</text>`);
  return `<svg id="${esc(id)}" xmlns="http://www.w3.org/2000/svg" width="${labelW + barW + 20}" height="${h}" viewBox="0 0 ${labelW + barW + 20} ${h}" role="img" aria-label="stance distribution per topic">${parts.join('')}</svg>`;
}

/** The histogram of chosen–rejected distances (Fig. 20's reading). */
export function distanceHistogramSvg(bins: readonly Bin[], id: string): string {
  const w = 520;
  const h = 220;
  const left = 44;
  const bottom = 34;
  const plotW = w - left - 10;
  const plotH = h - bottom - 10;
  const maxCount = Math.max(1, ...bins.map((b) => b.count));
  const bw = plotW / Math.max(1, bins.length);
  const parts: string[] = [];
  bins.forEach((b, i) => {
    const bh = (b.count / maxCount) * plotH;
    parts.push(`<rect class="bin" data-count="${b.count}" x="${(left + i * bw + 1).toFixed(2)}" y="${(10 + plotH - bh).toFixed(2)}" width="${(bw - 2).toFixed(2)}" height="${bh.toFixed(2)}" fill="#6a51a3"><title>${b.from.toFixed(3)}–${b.to.toFixed(3)}: ${b.count}</title></rect>`);
  });
  parts.push(`<line x1="${left}" y1="${10 + plotH}" x2="${left + plotW}" y2="${10 + plotH}" stroke="#999"/><line x1="${left}" y1="10" x2="${left}" y2="${10 + plotH}" stroke="#999"/>`);
  for (let i = 0; i <= bins.length; i += 2) parts.push(`<text x="${(left + i * bw).toFixed(2)}" y="${10 + plotH + 14}" text-anchor="middle" font-size="10" fill="#555">${((i * MAX_DISTANCE) / bins.length).toFixed(2)}</text>`);
  parts.push(`<text x="${left + plotW / 2}" y="${h - 4}" text-anchor="middle" font-size="11">Euclidean distance, chosen vs rejected stance distribution</text>`);
  parts.push(`<text x="${left - 6}" y="16" text-anchor="end" font-size="10" fill="#555">${maxCount}</text><text x="${left - 6}" y="${10 + plotH}" text-anchor="end" font-size="10" fill="#555">0</text>`);
  return `<svg id="${esc(id)}" xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="histogram of chosen-rejected distances">${parts.join('')}</svg>`;
}

export interface AnalysisReportMeta {
  name: string;
  dataset: string;
  buildKey: string;
  embedder: string;
  judge: string;
  threshold: number;
  candidates: number;
  retained: number;
  alignment?: string;
}

const EXTRA_CSS = `
.legend i { height: 10px; }
table.drift td.label { text-align: left; }
section.analysis { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 14px 16px; margin: 18px 0; }
`;

function legend(): string {
  return `<p class="legend">${STANCES.map((s) => `<span><i style="background:${STANCE_COLOURS[s]}"></i>${s}</span>`).join('')}</p>`;
}

/** The report page: what was analysed, then the stance bars and (pairs) the distance histogram and value gaps. */
export function renderAnalysisReport(meta: AnalysisReportMeta, summary: AnalysisSummary): string {
  const cats = Object.keys(summary.topics).sort();
  const head = documentHead(`Stance analysis: ${meta.dataset}`, CSS + EXTRA_CSS);
  const facts = [
    `dataset <b>${esc(meta.dataset)}</b> (${esc(summary.format)})`,
    `${meta.retained} of ${meta.candidates} datapoints within cosine ≥ ${meta.threshold} of an eval question; ${summary.rows} judged, ${summary.unlabelled} without a label`,
    `embedder ${esc(meta.embedder)}; judge ${esc(meta.judge)}${meta.alignment ? `; chosen = ${esc(meta.alignment)}` : ''}`,
    `build key <code>${esc(meta.buildKey.slice(0, 16))}</code>`,
  ];
  const body: string[] = [];
  if (cats.length === 0) body.push('<p class="empty">No datapoint was similar enough to any eval question: nothing to show.</p>');
  else if (summary.format === 'chat') {
    body.push(`<section class="analysis" id="stances"><h2>Stance distribution per topic</h2>${legend()}${stanceBarsSvg(cats.map((c) => ({ label: c, d: (summary.topics[c] as TopicSummary).stance })), 'stance-bars')}</section>`);
  } else {
    const d = summary.distances as NonNullable<AnalysisSummary['distances']>;
    body.push(
      `<section class="analysis" id="distances"><h2>Chosen vs rejected: distance between stance distributions</h2><p class="meta">${d.pairs} pairs with both sides labelled; value gap (mean distance) <b class="value-gap">${num(d.valueGap)}</b> (0: no difference, ${MAX_DISTANCE.toFixed(3)}: opposite)</p>${distanceHistogramSvg(d.bins, 'distance-histogram')}</section>`,
    );
    const rows = cats
      .map((c) => {
        const t = summary.topics[c] as TopicSummary;
        return `<tr data-category="${esc(c)}"><td class="label">${esc(c)}<span class="topic-text">${esc(t.topic)}</span></td><td class="num">${t.pairs ?? 0}</td><td class="num value-gap">${num(t.valueGap)}</td></tr>`;
      })
      .join('');
    body.push(`<section class="analysis" id="gaps"><h2>Value gap per topic</h2><table class="drift"><thead><tr><th>topic</th><th>pairs</th><th>value gap</th></tr></thead><tbody>${rows}</tbody></table></section>`);
    body.push(`<section class="analysis" id="stances"><h2>Stance of the chosen and the rejected side per topic</h2>${legend()}${stanceBarsSvg(cats.flatMap((c) => [{ label: `${c} · chosen`, d: (summary.topics[c] as TopicSummary).stance }, { label: `${c} · rejected`, d: (summary.topics[c] as TopicSummary).rejected as Distribution }]), 'stance-bars')}</section>`);
  }
  return `${head}
<body>
<header><h1>Stance analysis: ${esc(meta.dataset)}</h1><p class="meta">${facts.join(' · ')}</p></header>
<main>
${body.join('\n')}
</main>
</body>
</html>
`;
}
