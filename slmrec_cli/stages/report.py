"""`slmrec report`: the paper's tables and figures from run directories, into one Markdown file with PNG plots."""

from __future__ import annotations

from slmrec_cli.config.stages import ReportConfig


def report(cfg: ReportConfig) -> str:
    from slmrec_cli.report import build_report

    return build_report(cfg.runs, cfg.out, cfg.img_dir, cfg.data)
