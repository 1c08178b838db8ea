#!/usr/bin/env python3
"""Plot connect rate and p99 latency against client concurrency from pgssl-bench JSON lines.

    python3 benches/plot.py connect-sweep.jsonl connect-sweep.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dest: str) -> None:
    rows = sorted((json.loads(line) for line in open(src) if line.strip()), key=lambda r: r["clients"])
    clients = [r["clients"] for r in rows]
    fig, rate_axis = plt.subplots(figsize=(7, 4.2), dpi=120)
    rate_axis.plot(clients, [r["rate_per_s"] for r in rows], "o-", color="tab:blue", label="connections/s")
    rate_axis.set_xscale("log", base=2)
    rate_axis.set_xticks(clients, [str(c) for c in clients])
    rate_axis.set_xlabel("concurrent clients")
    rate_axis.set_ylabel("new TLS connections per second", color="tab:blue")
    rate_axis.set_ylim(bottom=0)
    p99_axis = rate_axis.twinx()
    p99_axis.plot(clients, [r["p99_ms"] for r in rows], "s--", color="tab:red", label="p99 latency")
    p99_axis.set_ylabel("p99 connect latency, ms", color="tab:red")
    p99_axis.set_yscale("log")
    rate_axis.set_title("pgssl: connection per transaction (TLS + SCRAM + SELECT 1)")
    rate_axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(dest)
    print(f"wrote {dest}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
