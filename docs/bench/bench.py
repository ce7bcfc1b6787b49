"""Side-by-side timing: `worker-runtime cuda-check` against the torch script, alternating.

Usage: bench.py WORKER_RUNTIME RUNS OUT_JSON
Each sample is one fresh process: wall time from spawn to exit, and its peak RSS (ru_maxrss of
that child, from wait4). One warm-up run of each comes first and is reported apart (page cache).
The order alternates every round so neither side always runs on a just-warmed GPU.
"""
import json
import os
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
runtime, runs, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sides = {
    "cuda-check": [runtime, "cuda-check"],
    "torch-script": [sys.executable, os.path.join(here, "torch_check.py")],
}


def sample(argv):
    started = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting
    return {"wall_s": wall, "max_rss_mib": usage.ru_maxrss / 1024, "exit": p.returncode}


warmup = {name: sample(argv) for name, argv in sides.items()}
samples = {name: [] for name in sides}
for i in range(runs):
    order = list(sides) if i % 2 == 0 else list(reversed(sides))
    for name in order:
        samples[name].append(sample(sides[name]))


def stats(xs, key):
    v = [x[key] for x in xs]
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


result = {
    "runs": runs,
    "warmup": warmup,
    "samples": samples,
    "summary": {
        name: {"wall_s": stats(xs, "wall_s"), "max_rss_mib": stats(xs, "max_rss_mib"),
               "exit_codes": sorted({x["exit"] for x in xs})}
        for name, xs in samples.items()
    },
}
s = result["summary"]
result["ratio_wall_median"] = s["torch-script"]["wall_s"]["median"] / s["cuda-check"]["wall_s"]["median"]
result["ratio_rss_median"] = (s["torch-script"]["max_rss_mib"]["median"]
                              / s["cuda-check"]["max_rss_mib"]["median"])
with open(out_path, "w") as f:
    json.dump(result, f, indent=2)

print(f"{'':14} {'median s':>9} {'min s':>7} {'max s':>7} {'peak RSS MiB':>13} exit")
for name, x in s.items():
    w = x["wall_s"]
    print(f"{name:14} {w['median']:9.3f} {w['min']:7.3f} {w['max']:7.3f} "
          f"{x['max_rss_mib']['median']:13.0f} {x['exit_codes']}")
print(f"torch-script / cuda-check: {result['ratio_wall_median']:.1f}x wall time, "
      f"{result['ratio_rss_median']:.1f}x peak RSS (medians of {runs} alternating runs)")
