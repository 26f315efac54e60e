#!/usr/bin/env python3
"""Turns the JSON reports of scripts/bench.sh into the markdown results table."""
import json
import os
import platform
import sys
from datetime import datetime, timezone


def load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ms(us):
    return f"{us / 1000:.2f}"


def row(label, r):
    l = r["latency_us"]
    errors = sum(r["errors"].values())
    # Reports written before goodput and latency_ok_us existed show "–".
    goodput = f"{r['goodput']:.0f}" if "goodput" in r else "–"
    ok_p99 = ms(r["latency_ok_us"]["p99"]) if "latency_ok_us" in r else "–"
    return (
        f"| {label} | {r['rate_achieved']:.0f} | {ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} "
        f"| {ms(l['p999'])} | {ms(l['max'])} | {errors} | {100 * r['partial_fraction']:.2f}% "
        f"| {100 * r['coverage_mean']:.2f}% | {goodput} | {ok_p99} |"
    )


def main():
    out = sys.argv[1]
    header = (
        "| run | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | partial | coverage "
        "| goodput/s | p99 answers ms |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}), "
          f"{platform.system()} {platform.release()}.\n")

    print("### One index in-process vs the tree (4 shards, 2 parents), open loop\n")
    print(header)
    rates = sorted({int(n.split("-")[1].split(".")[0]) for n in os.listdir(out)
                    if n.startswith("tree-") and n.endswith(".json") and n[5:-5].isdigit()})
    ratios = []
    for rate in rates:
        d, t = load(out, f"direct-{rate}"), load(out, f"tree-{rate}")
        if d:
            print(row(f"direct, {rate}/s", d))
        if t:
            print(row(f"tree, {rate}/s", t))
        if d and t:
            ratios.append((rate, t["latency_us"]["p50"] / max(d["latency_us"]["p50"], 1),
                           t["latency_us"]["p99"] / max(d["latency_us"]["p99"], 1)))
    d, t = load(out, "direct-max"), load(out, "tree-max")
    if d:
        print(row("direct, closed loop (8 workers)", d))
    if t:
        print(row("tree, closed loop (8 workers)", t))
    print()
    if ratios:
        print("| rate | tree p50 ÷ direct p50 | tree p99 ÷ direct p99 |\n|---|---|---|")
        for rate, p50, p99 in ratios:
            print(f"| {rate}/s | {p50:.1f}× | {p99:.1f}× |")
        print()
    if d and t:
        print(f"Peak throughput: tree {t['rate_achieved']:.0f}/s, direct {d['rate_achieved']:.0f}/s "
              f"(tree ÷ direct = {t['rate_achieved'] / d['rate_achieved']:.2f}).\n")

    nb, b = load(out, "straggler-nobudget"), load(out, "straggler-budget50")
    if nb or b:
        print("### Stragglers: every leaf delays 1% of requests by 1 s\n")
        print(header)
        if nb:
            print(row("budget 5 s (no cut-off)", nb))
        if b:
            print(row("budget 50 ms", b))
        if nb and b:
            print(f"\np99.9: {ms(nb['latency_us']['p999'])} ms without a budget, "
                  f"{ms(b['latency_us']['p999'])} ms with a 50 ms budget "
                  f"(goal: ≤ 55 ms); mean coverage with the budget {100 * b['coverage_mean']:.2f}% "
                  f"(goal: ≥ 99%).")
    replicas(out, header)
    canaries(out, header)
    cache(out, header)


def cache(out, header):
    runs = [(label, load(out, name)) for name, label in
            (("cache-off", "cache off, open loop"), ("cache-on", "cache on, open loop"),
             ("cache-off-max", "cache off, closed loop (8 workers)"),
             ("cache-on-max", "cache on, closed loop (8 workers)"))]
    if not any(r for _, r in runs):
        return
    print("\n### Result cache: Zipf-distributed queries (s = 1), 4 shards, 2 parents, budget 1 s\n")
    print(header)
    for label, r in runs:
        if r:
            print(row(label, r))
    stats = load(out, "cache-on-stats")
    if stats:
        nodes = stats["nodes"].values()
        root = next((n["counters"] for n in nodes if n["role"] == "root"), {})
        looked_up = sum(root.get(k, 0) for k in ("cache_hits", "cache_misses", "cache_coalesced"))
        t = stats["total"]
        print(f"\nRoot: {root.get('cache_hits', 0)} hits, {root.get('cache_coalesced', 0)} coalesced, "
              f"{root.get('cache_misses', 0)} misses ({100 * root.get('cache_hits', 0) / max(looked_up, 1):.1f}% hits); "
              f"root and parents together {t.get('cache_evictions', 0)} evictions, "
              f"{t.get('cache_bytes', 0) / 2**20:.1f} MiB cached.")


def canaries(out, header):
    runs = [(label, load(out, f"canary-{mode}")) for mode, label in
            (("off", "canaries off"), ("on", "canaries on (queries repeat)"),
             ("unseen", "canaries on, every query unseen"))]
    if not any(r for _, r in runs):
        return
    print("\n### Canary requests: the latency they cost (4 shards, 2 parents, budget 1 s)\n")
    print(header)
    for label, r in runs:
        if r:
            print(row(label, r))
    off = runs[0][1]
    if off:
        print()
        for label, r in runs[1:]:
            if r:
                print(f"- {label}: p50 {r['latency_us']['p50'] / max(off['latency_us']['p50'], 1):.2f}×, "
                      f"p99 {r['latency_us']['p99'] / max(off['latency_us']['p99'], 1):.2f}× canaries off.")


def replicas(out, header):
    off, on = load(out, "hedge-off"), load(out, "hedge-on")
    if off or on:
        print("\n### Replicas (2 per shard): hedging, with 1% of leaf requests delayed 1 s, budget 1 s\n")
        print(header)
        if off:
            print(row("hedging off", off))
        if on:
            print(row("hedging on (≤ 5%)", on))
        stats = load(out, "hedge-on-parents")
        if off and on:
            cut = off["latency_us"]["p999"] / max(on["latency_us"]["p999"], 1)
            line = (f"\np99.9: {ms(off['latency_us']['p999'])} ms without hedging, "
                    f"{ms(on['latency_us']['p999'])} ms with it ({cut:.0f}× lower); "
                    f"p99: {ms(off['latency_us']['p99'])} → {ms(on['latency_us']['p99'])} ms.")
            if stats:
                t = stats["total"]
                primary = t.get("replica_calls", 0) - t.get("hedges_sent", 0) - t.get("retries", 0)
                extra = t.get("hedges_sent", 0) / max(primary, 1)
                line += (f" Hedges sent: {t.get('hedges_sent', 0)} for {primary} primary leaf requests "
                         f"({100 * extra:.2f}% extra), of which {t.get('hedges_won', 0)} won.")
            print(line)
    policies = [(f"{p}, no probation", load(out, f"policy-{p}"))
                for p in ("round_robin", "least_outstanding", "latency_aware")]
    policies.append(("latency_aware with probation (the defaults)", load(out, "policy-defaults")))
    if any(r for _, r in policies):
        print("\n### Replica policies, one replica of every shard ~3× slower (+3 ms), hedging off\n")
        print(header)
        for name, r in policies:
            if r:
                print(row(name, r))


if __name__ == "__main__":
    main()
