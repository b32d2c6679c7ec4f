"""`genlab serve` under a small load (issue: web demo): 200 requests from 8 concurrent clients on
loopback, each a grid of 16 images from a trained run; latency percentiles and errors.

    .venv/bin/python benchmarks/serve_load.py [RUN ...]   (default: the GAN budget runs of mnist-sample)
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from budget_protocol import ROOT  # beside this script
from write_table import write_table

from genlab.serve import create_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=[str(ROOT / "runs/gan_budget/mnist-sample-best"),
                                                    str(ROOT / "runs/vae_budget/mnist-sample-vae")])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--count", type=int, default=16)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(args.runs), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    names = [r["name"] for r in httpx.get(f"http://127.0.0.1:{port}/api/runs").json()["runs"]]
    per_client = args.requests // args.clients

    def session(i: int) -> list[tuple[float, int]]:
        out = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            for j in range(per_client):
                start = time.perf_counter()
                r = c.get("/api/generate.png", params={"run": names[(i + j) % len(names)], "seed": i * 1000 + j,
                                                       "count": args.count})
                out.append((time.perf_counter() - start, r.status_code))
        return out

    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = sum(pool.map(session, range(args.clients)), [])
    wall = time.perf_counter() - start
    server.should_exit = True
    lat = sorted(t * 1000 for t, _ in results)
    errors = sum(code != 200 for _, code in results)
    q = statistics.quantiles(lat, n=100)
    text = (f"{len(results)} requests ({args.clients} clients x {per_client}), {args.count} images each, runs "
            f"{', '.join(names)}; {wall:.1f} s in all, {len(results) / wall:.1f} requests/s; errors: {errors}\n\n"
            f"| p50 | p90 | p99 | max |\n|---|---|---|---|\n| {q[49]:.0f} ms | {q[89]:.0f} ms | {q[98]:.0f} ms | "
            f"{lat[-1]:.0f} ms |\n")
    print(text)
    write_table(__file__, text)


if __name__ == "__main__":
    main()
