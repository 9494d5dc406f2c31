"""The comparison report: tables (numbers), figures (seaborn), verdict (statistics), render
(Markdown + self-contained HTML) and build (reads the evaluation outputs, writes the report)."""

from segloss.report.build import build_report

__all__ = ["build_report"]
