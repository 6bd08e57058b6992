#!/usr/bin/env python3
"""Summarizes perf/run's results.tsv as markdown: medians per cell, then
uringnotes' ratios to the best peer.

Peers: nginx, hyper-notes and may-static (may_minihttp; perf/run's
GET_PEERS). For POST the comparable pair is uringnotes with --fsync never
against hyper-notes (both write without fsync); uringnotes-fsync (the
default, durable) is listed for reference only.
Usage: summarize.py results.tsv
"""

import csv
import statistics
import sys
from collections import defaultdict

WORKLOADS = {
    "note": "GET /notes/{id}",
    "page": "GET / (100 notes)",
    "post": "POST /notes",
}
PEERS = ("nginx", "hyper-notes", "may-static")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    if v is None:
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def fmt_us(us):
    if us is None:
        return "-"
    if us < 1000:
        return f"{us:.0f} µs"
    return f"{us / 1000:.2f} ms"


def main(path):
    cells = defaultdict(list)
    order = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            key = (row["workload"], int(row["conns"]), row["server"])
            if key not in cells:
                order.append(key)
            cells[key].append(row)

    med = {}
    for key, rows in cells.items():
        med[key] = {
            "rps": median(num(r["req_per_s"]) for r in rows),
            "p99": median(num(r["p99_us"]) for r in rows),
            "cpu": median(num(r["server_cpu_us_per_req"]) for r in rows),
            "client": median(num(r["client_cpu_us_per_req"]) for r in rows),
            "errors": sum(int(float(r["errors"] or 0)) for r in rows),
            "rounds": len(rows),
        }

    print("| workload | conns | server | req/s | p99 | server CPU/req | client CPU/req | errors |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for key in sorted(order, key=lambda k: (list(WORKLOADS).index(k[0]), k[1])):
        m = med[key]
        print(
            f"| {WORKLOADS[key[0]]} | {key[1]} | {key[2]} | {fmt(m['rps'])} | {fmt_us(m['p99'])} "
            f"| {fmt(m['cpu'], 1)} µs | {fmt(m['client'], 1)} µs | {m['errors']} |"
        )

    print()
    print("uringnotes / best peer (req/s: above 1 is better; server CPU per request: below 1 is better)")
    print()
    print("| build | workload | conns | best peer by req/s | req/s ratio | best peer by CPU | CPU/req ratio |")
    print("|---|---|---:|---|---:|---|---:|")
    for build in ("uringnotes", "uringnotes-coop"):
      for workload in WORKLOADS:
        for conns in sorted({k[1] for k in order if k[0] == workload}):
            ours = med.get((workload, conns, build))
            peers = {p: med[(workload, conns, p)] for p in PEERS if (workload, conns, p) in med}
            if not ours or not peers:
                continue
            best_rps = max(peers, key=lambda p: peers[p]["rps"] or 0)
            best_cpu = min(peers, key=lambda p: peers[p]["cpu"] or float("inf"))
            rps_ratio = (ours["rps"] / peers[best_rps]["rps"]) if peers[best_rps]["rps"] else None
            cpu_ratio = (ours["cpu"] / peers[best_cpu]["cpu"]) if ours["cpu"] and peers[best_cpu]["cpu"] else None
            print(
                f"| {build} | {WORKLOADS[workload]} | {conns} | {best_rps} | {fmt(rps_ratio, 2)}x "
                f"| {best_cpu} | {fmt(cpu_ratio, 2)}x |"
            )

    ratios = []
    for build in ("uringnotes", "uringnotes-coop"):
        for conns in sorted({k[1] for k in order if k[0] == "post"}):
            post, get = med.get(("post", conns, build)), med.get(("note", conns, build))
            if not post or not get or not get["rps"] or not get["cpu"]:
                continue
            ratios.append(
                f"| {build} | {conns} | {fmt(post['rps'] / get['rps'], 2)}x "
                f"| {fmt(post['cpu'] / get['cpu'] if post['cpu'] else None, 2)}x |"
            )
    if ratios:
        print()
        print("POST /notes (--fsync never) / GET /notes/{id}, same build (req/s; server CPU per request)")
        print()
        print("| build | conns | POST req/s / GET req/s | POST CPU/req / GET CPU/req |")
        print("|---|---:|---:|---:|")
        print("\n".join(ratios))

if __name__ == "__main__":
    main(sys.argv[1])
