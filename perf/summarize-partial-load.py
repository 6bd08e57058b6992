#!/usr/bin/env python3
"""Summarizes perf/partial-load's cells.tsv: per placement and cell, each
server's median value and the median of its per-round ratios to nginx.

Lines of cells.tsv: round, placement, server, cell, metric, value."""
import statistics
import sys
from collections import defaultdict

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
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
    return (placement != "pinned", ["rate", "syscalls", "peak"].index(kind) if kind in ("rate", "syscalls", "peak") else 9, num, metric)


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
        ratio = f"{statistics.median(ratios):.2f}x" if ratios and s != "nginx" else ""
        out += [f"{med:.2f}" if med < 100 else f"{med:.0f}", ratio]
    print("\t".join(list(key) + out))
