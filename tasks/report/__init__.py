"""Analysis of a curated run: MMD² between sets, diversity, score distributions, a t-SNE map, one HTML page.

from tasks.report import build_report
build_report("s3://bucket/runs/RUN/manifest.parquet", storage).html_uri
"""

from tasks.report.build import ReportResult, build_report
from tasks.report.metrics import diversity, mmd2_rbf, mmd_matrix

__all__ = ["ReportResult", "build_report", "diversity", "mmd2_rbf", "mmd_matrix"]
