"""Rows of two results files of the same grid (say one run by the local loop, one by Ray) side by
side: are they identical apart from timing fields (cells.TIMING_FIELDS), and what did each cost?

    OMP_NUM_THREADS=1 .venv/bin/python -m export evaluate --models emodb-paper --attacks fgsm,deepfool \\
        --examples 64 --batch 8 --threads 1 --out /tmp/cmp-local --no-report
    OMP_NUM_THREADS=1 .venv/bin/python -m export evaluate --models emodb-paper --attacks fgsm,deepfool \\
        --examples 64 --batch 8 --threads 1 --executor ray --cpus-per-task 1 --out /tmp/cmp-ray --no-report
    .venv/bin/python benchmarks/ray_vs_local.py /tmp/cmp-local/results-quick.jsonl /tmp/cmp-ray/results-quick.jsonl

The README's larger comparison: the same two commands with
`--attacks fgsm,deepfool,cw_linf --examples 320 --batch 16`, on an idle machine."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ser_core.evaluation import cells  # noqa: E402


def main(a: str, b: str):
    ra, rb = cells.read_rows(a), cells.read_rows(b)
    strip = lambda rows: {cells.row_key(r): {k: v for k, v in r.items() if k not in cells.TIMING_FIELDS} for r in rows}
    sa, sb = strip(ra), strip(rb)
    differing = sorted(str(k) for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
    cost = lambda rows: {"cpu_seconds": round(sum(r["cpu_seconds"] for r in rows if r["subset"] == "all"), 1),
                         "attack_seconds": round(sum(r["seconds"] for r in rows if r["subset"] == "all"), 1),
                         "executors": sorted({b["executor"] for r in rows for b in r.get("batches", [])})}
    print(json.dumps({"rows": [len(ra), len(rb)], "identical_apart_from_timing": not differing,
                      "differing_rows": differing[:10], "a": cost(ra), "b": cost(rb)}, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:3])
