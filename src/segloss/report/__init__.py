"""The comparison report: tables (numbers), figures (seaborn), verdict (statistics), wording
and sections (text), render (Markdown + self-contained HTML), build (reads the evaluate
stage's outputs, writes the report), factorial (a second factor crossed with the loss) and
logged (what the entry point records in MLflow)."""

from segloss.report.build import BuiltReport, build_report
from segloss.report.factorial import Factor

__all__ = ["BuiltReport", "Factor", "build_report"]
