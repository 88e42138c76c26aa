"""Reports from trial records: tables, Pareto plots and the verdicts on the BC-ResNet paper's claims.

Reads records only (``kwsbench.results``) and imports pandas, seaborn, matplotlib and scipy, never torch, so
a report builds on a machine without the training stack. ``build_report`` is the entry point.
"""

from kwsbench.report.build import Report, build_report

__all__ = ["Report", "build_report"]
