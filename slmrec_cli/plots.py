"""One figure shape for every metric-vs-something plot (probe, depth sweep, block count): HR@10, NDCG@10, MRR."""

from __future__ import annotations

from pathlib import Path

from slmrec_cli.io import atomic_path

PANELS = ("HR@10", "NDCG@10", "MRR")


def metric_panels(xs: list, series: dict[str, list[dict]], path: Path, *, xlabel: str, title: str,
                  baseline: dict | None = None, baseline_name: str = "baseline", log2: bool = False) -> None:
    """series: label → one metrics dict per x. Values are drawn in %; the baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(PANELS), figsize=(12, 3.4))
    for ax, metric in zip(axes, PANELS, strict=True):
        for name, rows in series.items():
            ax.plot(xs, [100 * r[metric] for r in rows], marker="o", label=name)
        if baseline:
            ax.axhline(100 * baseline[metric], color="tab:red", linestyle="--", label=baseline_name)
        if log2:
            ax.set_xscale("log", base=2)
        if len(xs) <= 12:
            ax.set_xticks(xs, [str(x) for x in xs])
        else:  # e.g. a 30-layer probe: let matplotlib thin the integer ticks
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
