#!/usr/bin/env python3
"""Summarizes perf/partial-load's cells.tsv (also perf/tls's and
perf/caching's): per placement and cell, each server's median value and the
median of its per-round ratios to nginx, with a 90% confidence interval for
that median.

On these VMs single rounds of one cell move by 10-30%, so a median alone
does not say whether 1.04x differs from 1.0x. The interval is a percentile
bootstrap of the per-round ratios (2,000 resamples, fixed seed, so the same
input prints the same interval); with fewer than 5 rounds none is printed.

Usage: summarize-partial-load.py CELLS.tsv [CELLS.tsv ...]
Several files (runs of the same script) are pooled: their rounds are kept
apart, each ratio still pairs servers within one round of one run.

Lines of cells.tsv: round, placement, server, cell, metric, value."""
import random
import statistics
import sys
from collections import defaultdict

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_MIN_ROUNDS = 5
CONFIDENCE = 0.90
# The order cells are printed in (by the name before their number).
KINDS = ["rate", "syscalls", "wakes", "profile", "peak"]

rows = []
for run, path in enumerate(sys.argv[1:]):
    for line in open(path):
        if line.strip():
            rnd, *rest = line.rstrip("\n").split("\t")
            rows.append([f"{run}.{rnd}", *rest])

# values[(placement, cell, metric)][server][round] = value
values = defaultdict(lambda: defaultdict(dict))
for rnd, placement, server, cell, metric, value in rows:
    try:
        values[(placement, cell, metric)][server][rnd] = float(value)
    except ValueError:
        pass

servers = sorted({r[2] for r in rows}, key=lambda s: (s != "nginx", s))


def cell_order(key):
    placement, cell, metric = key
    kind = "".join(c for c in cell if not c.isdigit())
    num = int("".join(c for c in cell if c.isdigit()) or 0)
    return (placement != "pinned", KINDS.index(kind) if kind in KINDS else 9, num, metric)


def median_interval(samples):
    """The percentile-bootstrap interval of the median, or None."""
    if len(samples) < BOOTSTRAP_MIN_ROUNDS:
        return None
    rng = random.Random(16)
    medians = sorted(
        statistics.median(rng.choices(samples, k=len(samples)))
        for _ in range(BOOTSTRAP_RESAMPLES)
    )
    tail = (1 - CONFIDENCE) / 2
    return medians[int(tail * len(medians))], medians[int((1 - tail) * len(medians)) - 1]


print("placement\tcell\tmetric\t" + "\t".join(f"{s}\t{s}/nginx" for s in servers))
for key in sorted(values, key=cell_order):
    by_server = values[key]
    base = by_server.get("nginx", {})
    out = []
    for s in servers:
        per_round = by_server.get(s, {})
        if not per_round:
            out += ["-", "-"]
            continue
        med = statistics.median(per_round.values())
        ratios = [v / base[r] for r, v in per_round.items() if base.get(r)]
        ratio = ""
        if ratios and s != "nginx":
            ratio = f"{statistics.median(ratios):.2f}x"
            interval = median_interval(ratios)
            if interval:
                ratio += f" [{interval[0]:.2f}-{interval[1]:.2f}]"
        out += [f"{med:.2f}" if med < 100 else f"{med:.0f}", ratio]
    print("\t".join(list(key) + out))
