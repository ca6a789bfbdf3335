/** Lineage report rendering: HTML page and per stage × topic SVG figures. */
export { renderLineageReport, RenderLineageReportInput, ReportStage, esc } from './html';
export type { RenderLineageReportResult } from './html';
export { renderFigureSvg, figureName, renumberSvgIds, STANCE_COLOURS } from './figure';
export type { RenderFigureInput, ReportFigure } from './figure';
