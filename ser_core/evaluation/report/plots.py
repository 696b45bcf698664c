"""The report's plots: accuracy under attack per corpus and gender, and confidence before and
after the attack."""
from __future__ import annotations

from pathlib import Path

from ser_core.data.corpora import CORPORA
from ser_core.evaluation.report.common import SUBSETS


def plot(rows: list[dict], out_dir: Path) -> list[Path]:
    """accuracy_<protocol>.png: accuracy against attack setting, per corpus and gender (95 %
    Wilson bars); confidence_<protocol>.png: mean top-class confidence before and after."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for protocol in sorted({r["protocol"] for r in rows}):
        rs = [r for r in rows if r["protocol"] == protocol and not r.get("defence")]
        corpora = [c for c in CORPORA if any(r["corpus"] == c for r in rs)]
        attacks = list(dict.fromkeys(r["attack"] for r in rs))
        if not corpora or not attacks:
            continue
        fig, axes = plt.subplots(len(corpora), len(attacks), figsize=(2.6 * len(attacks), 2.4 * len(corpora)),
                                 squeeze=False, sharey=True)
        for i, c in enumerate(corpora):
            for j, a in enumerate(attacks):
                ax = axes[i][j]
                for s, colour in zip(SUBSETS, ("k", "tab:blue", "tab:red")):
                    # a subset with no examples (one example a cell) has no accuracy to draw
                    pts = [r for r in rs if r["corpus"] == c and r["attack"] == a and r["subset"] == s and r["n"]]
                    if not pts:
                        continue
                    xs = range(len(pts))
                    ys = [r["accuracy"] for r in pts]
                    err = [[y - r["accuracy_ci"][0] for y, r in zip(ys, pts)], [r["accuracy_ci"][1] - y for y, r in zip(ys, pts)]]
                    ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, color=colour, label=s, lw=1)
                    ax.set_xticks(list(xs), [_strength(r) for r in pts], fontsize=6)
                ax.set_ylim(-0.02, 1.02)
                if i == 0:
                    ax.set_title(a, fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{CORPORA[c].title}\naccuracy", fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"Accuracy under attack, {protocol} protocol (95 % Wilson intervals)", fontsize=10)
        fig.tight_layout()
        p = out_dir / f"accuracy_{protocol}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
        fig, axes = plt.subplots(len(corpora), 1, figsize=(max(6, 0.35 * len(rs) / 3 / len(corpora) + 3), 2.4 * len(corpora)),
                                 squeeze=False)
        for i, c in enumerate(corpora):
            ax = axes[i][0]
            pts = [r for r in rs if r["corpus"] == c and r["subset"] == "all"]
            xs = range(len(pts))
            ax.bar([x - 0.2 for x in xs], [r["confidence_before"] for r in pts], 0.4, label="before", color="tab:gray")
            ax.bar([x + 0.2 for x in xs], [r["confidence_after"] for r in pts], 0.4, label="after", color="tab:orange")
            ax.set_xticks(list(xs), [f"{r['attack']} {_strength(r)}" for r in pts], rotation=60, ha="right", fontsize=6)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"{CORPORA[c].title}\nconfidence", fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Mean top-class confidence before and after attack, {protocol} protocol", fontsize=10)
        fig.tight_layout()
        p = out_dir / f"confidence_{protocol}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def _strength(r: dict) -> str:
    """The setting's value(s) in short, for axis ticks."""
    return "/".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in r["setting"].values()) or "-"
