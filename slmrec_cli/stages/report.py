"""`slmrec report`: the paper's tables and figures from run directories, into one Markdown file with PNG plots; the
result names the files written."""

from __future__ import annotations

from pathlib import Path

from slmrec_cli.config.stages import ReportConfig


def report(cfg: ReportConfig) -> str:
    from slmrec_cli.report import build_report

    return build_report(cfg.runs, cfg.out, cfg.img_dir, cfg.data, cfg.published)


def main(cfg: ReportConfig) -> dict:
    """`slmrec report`: writes the report (it says where on stderr); the result is the Markdown file, the plots'
    directory and the plots in it, and the runs given."""
    text = report(cfg)
    img_dir = Path(cfg.img_dir) if cfg.img_dir else Path(cfg.out).parent / "img"
    plots = sorted(str(img_dir / name) for name in set(_linked_images(text)))
    return {"out": str(cfg.out), "img_dir": str(img_dir), "plots": plots, "runs": [str(r) for r in cfg.runs],
            "chars": len(text)}


def _linked_images(text: str) -> list[str]:
    """The file names of the PNGs the Markdown links to."""
    import re

    return [Path(m).name for m in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)]
