#!/usr/bin/env python3
"""Plot connect rate and p99 connect latency against concurrency, one line per target, from the
sweep.jsonl files benches/pool-sweep.sh writes (a "label" per file, e.g. the pgssl configuration).

    python3 benches/plot_sweep.py out.png default=/tmp/sweep/sweep.jsonl cached=/tmp/sweep-c/sweep.jsonl
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(dest: str, sources: list[str]) -> None:
    fig, (rate, p99) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    seen = set()
    for source in sources:
        label, path = source.split("=", 1)
        rows = [json.loads(line) for line in open(path) if line.strip()]
        for target in sorted({r["target"] for r in rows}):
            # direct PostgreSQL and PgBouncer are the same in every file: draw them once.
            name = target if target != "pgssl" else f"pgssl ({label})"
            if name in seen:
                continue
            seen.add(name)
            mine = sorted((r for r in rows if r["target"] == target), key=lambda r: r["clients"])
            clients = [r["clients"] for r in mine]
            rate.plot(clients, [r["rate_per_s"] for r in mine], "o-", label=name)
            p99.plot(clients, [r["p99_ms"] for r in mine], "s-", label=name)
    for axis, title in ((rate, "new TLS connections per second"), (p99, "p99 connect latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    rate.set_ylim(bottom=0)
    p99.set_yscale("log")
    rate.legend(fontsize=8)
    fig.suptitle("connection per transaction: TLS + SCRAM (1 iteration) + SELECT, pgssl-bench")
    fig.tight_layout()
    fig.savefig(dest)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
