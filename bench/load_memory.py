"""Peak host memory of loading Gemma 3 270M (float32 safetensors, 1.07 GB) whole, and straight into shards.

Each case runs in fresh processes with CPU devices simulated by XLA_FLAGS; a process reports its peak
resident memory (ru_maxrss) after importing jax and jaxspec and after loading, and the difference is
what loading cost it. Two processes joined by jax.distributed on 127.0.0.1 (gloo) share one
fsdp=2 x tensor=4 mesh, so each holds half of every tensor: what a host of a pod slice does.

    python -m bench.load_memory --summary
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys

from bench import summaries

CASES = (
    # (name, processes, devices per process, mesh or None)
    ("one process, no mesh", 1, 1, None),
    ("one process, 8 devices, fsdp=2 x tensor=4", 1, 8, "fsdp=2,tensor=4"),
    ("two processes, 4 devices each, fsdp=2 x tensor=4", 2, 4, "fsdp=2,tensor=4"),
)
MIB = 2**20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def worker(model: str, mesh: str | None, coordinator: str | None, process_id: int, processes: int) -> None:
    """One process of a case: prints {"before": bytes, "after": bytes, "held": bytes} as JSON."""
    if coordinator is not None:
        from jaxspec.distributed import ClusterSpec, initialize

        initialize(ClusterSpec(coordinator, processes, process_id))
    import jax

    from jaxspec import load

    jax.devices()
    before = peak_rss()
    params = load(model, mesh=mesh).params
    held = sum(s.data.nbytes for x in jax.tree_util.tree_leaves(params) for s in x.addressable_shards)
    print(json.dumps(dict(before=before, after=peak_rss(), held=held)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(model: str, processes: int, devices: int, mesh: str | None) -> list[dict]:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    coordinator = f"127.0.0.1:{_free_port()}" if processes > 1 else None
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.load_memory", "--worker", model, "--mesh", mesh or "",
             "--coordinator", coordinator or "", "--process-id", str(pid), "--processes", str(processes)],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        for pid in range(processes)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {outs}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def markdown(rows: list[dict]) -> str:
    lines = ["| case | process | params held (MiB) | peak before loading (MiB) | peak after (MiB) | loading added (MiB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['process']} | {r['held'] / MIB:.0f} | {r['before'] / MIB:.0f} | "
                     f"{r['after'] / MIB:.0f} | {(r['after'] - r['before']) / MIB:.0f} |")
    return "\n".join(lines)


def summary_table(summary: dict) -> str:
    return markdown(summary["rows"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.load_memory", description=__doc__.splitlines()[0])
    p.add_argument("--summary", action="store_true", help="write the rows to bench/summaries/ (committed)")
    p.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    p.add_argument("--mesh", default="", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default="", help=argparse.SUPPRESS)
    p.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.mesh or None, args.coordinator or None, args.process_id, args.processes)
        return
    from jaxspec import reference_model

    model = str(reference_model.converted_dir(progress=print))
    rows = []
    for case, processes, devices, mesh in CASES:
        for pid, r in enumerate(run_case(model, processes, devices, mesh)):
            rows.append(dict(case=case, process=pid, **r))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    print(markdown(rows))
    if args.summary:
        summaries.write("load_memory", "bench.load_memory", argv, rows)


if __name__ == "__main__":
    main()
