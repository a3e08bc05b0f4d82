"""Command line of the paper-results regeneration: every published table and figure from scratch.

    python -m his_cli.paper_results --list
    python -m his_cli.paper_results                       # all that this machine can run, resumable
    python -m his_cli.paper_results --only fig10 bench_env --dry-run
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

EPILOG = """Each result runs its commands (from the repository root, with this Python) into
OUTPUT_DIR/<name>/, with its log in run.log; a finished one leaves done.json and is not run again.
exit status: 0 every chosen result done or finished before, 1 some failed (the others still ran),
2 bad input (nothing was started), 130 stopped by SIGINT/SIGTERM (run the same command to resume)."""


def build_parser() -> argparse.ArgumentParser:
    from experiments.paper_results import DEVICES, PUBLISHED

    p = argparse.ArgumentParser(prog="python -m his_cli.paper_results", epilog=EPILOG,
                                description="Regenerate the published tables and figures of the README and docs.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the results (name, device, minutes, page) and exit")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help=f"these results only (default: all that the device allows); one of: {', '.join(PUBLISHED)}")
    p.add_argument("--device", choices=("auto", *DEVICES), default="auto",
                   help="run the results that need at most this (cpu: CPU-only ones; cuda: all; default auto: cuda "
                        "when torch sees a GPU)")
    p.add_argument("--output-dir", default="results/paper", help="where each result goes (default results/paper)")
    p.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from experiments.paper_results import PUBLISHED, cuda_present, run_published

    if args.list:
        for name in PUBLISHED:
            result = PUBLISHED[name]
            print(f"{name:<18} {result.device:<4} ~{result.minutes:>3g} min  {result.page}  {result.what}")
        return 0
    device = args.device if args.device != "auto" else ("cuda" if cuda_present() else "cpu")
    if args.only:
        unknown = [name for name in args.only if name not in PUBLISHED]
        if unknown:
            print(f"paper_results: error: result {unknown[0]!r}; allowed: {', '.join(PUBLISHED)}", file=sys.stderr)
            return 2
        needs_gpu = [name for name in args.only if PUBLISHED[name].device == "cuda"]
        if needs_gpu and device != "cuda" and not args.dry_run:
            print(f"paper_results: error: {', '.join(needs_gpu)} need a CUDA GPU, and --device is {device}",
                  file=sys.stderr)
            return 2
        names = list(args.only)
    else:
        names = [name for name in PUBLISHED if device == "cuda" or PUBLISHED[name].device == "cpu"]
        left = [name for name in PUBLISHED if name not in names]
        if left:
            print(f"paper-results: {', '.join(left)} need a CUDA GPU: not run here")
    try:
        status = run_published(names, args.output_dir, dry_run=args.dry_run, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("paper-results: stopped; run the same command again to resume", file=sys.stderr)
        return 130
    if "stopped" in status.values():
        return 130
    return 1 if any(s.startswith("failed") for s in status.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
