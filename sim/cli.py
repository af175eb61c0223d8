"""Command line: one run, a sweep of seeds in parallel processes, and shrinking of a failing schedule."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from sim import faults as fl
from sim.workload import WORKLOADS
from sim.world import Options, Result, World

SELF_CHECK_SECONDS = 5.0


def options_from(args: argparse.Namespace, seed: int | None = None) -> Options:
    kinds = fl.DEFAULT_KINDS if args.faults == "default" else [k for k in args.faults.split(",") if k and k != "none"]
    for kind in kinds:
        if kind not in fl.ALL_KINDS:
            raise SystemExit(f"unknown fault kind {kind!r}; known: {', '.join(fl.ALL_KINDS)}")
    # two joins and two leaves under faults need more than 45 s (an admission not done in 40 s is asked again)
    duration, quiet = (90.0, 40.0) if args.membership else (45.0, 25.0)
    duration = duration if args.duration is None else args.duration
    quiet = quiet if args.quiet is None else args.quiet
    return Options(seed=args.seed if seed is None else seed, nodes=args.nodes, duration=duration,
                   faults=list(kinds), workload=args.workload, quiet=quiet, fault_rate=args.fault_rate,
                   keep=fl.parse_keep(args.keep), plant=[p for p in args.plant.split(",") if p],
                   trace_file=getattr(args, "trace", None), membership=args.membership)


def repro_command(opts: Options) -> str:
    parts = [f"python -m sim --seed {opts.seed} --nodes {opts.nodes} --duration {opts.duration:g}",
             f"--workload {opts.workload} --quiet {opts.quiet:g} --fault-rate {opts.fault_rate:g}",
             f"--faults {','.join(opts.faults) or 'none'}"]
    if opts.keep is not None:
        parts.append(f"--keep {','.join(str(i) for i in sorted(opts.keep)) or ','}")
    if opts.membership:
        parts.append("--membership")
    if opts.plant:
        parts.append(f"--plant {','.join(opts.plant)}")
    return " ".join(parts)


def self_check(opts: Options, first: Result, seconds: float) -> str | None:
    """Run the first `seconds` again in this process: the trace must be byte-identical up to there (compared at
    every whole second, so a mismatch names the second where the two runs parted). This catches state that
    survives from one run to the next in a process, and nondeterminism within that span."""
    until = min(seconds, opts.duration)
    again = World(Options(**{**opts.__dict__, "trace_file": None, "stop_at": until})).run()
    for t in sorted(again.marks):
        if first.marks.get(t) != again.marks[t]:
            return (f"nondeterminism: the trace up to {t:g} s was {first.marks.get(t, '-')[:16]}, "
                    f"then {again.marks[t][:16]} (re-run of the first {until:g} s)")
    return None


def run_one(opts: Options, check: float = SELF_CHECK_SECONDS) -> tuple[Result, list[str]]:
    """One run, then (`check` > 0) the self-check of its first `check` seconds."""
    result = World(opts).run()
    problems = list(result.violations)
    if check > 0:
        mismatch = self_check(opts, result, check)
        if mismatch:
            problems.append(mismatch)
    return result, problems


def report(opts: Options, result: Result, problems: list[str]) -> None:
    st = result.stats
    print(f"seed {opts.seed}: {opts.nodes} nodes, {result.sim_seconds:g} simulated s "
          f"in {result.wall_seconds:.2f} wall s "
          f"({result.sim_seconds / max(result.wall_seconds, 1e-9):.0f} sim s/wall s, "
          f"{result.messages / max(result.wall_seconds, 1e-9):.0f} messages/s)")
    print(f"  faults {st['faults']}, messages {st['delivered']} delivered / {st['lost']} lost, resets {st['resets']}, "
          f"power losses {st['power_losses']} (torn {st['torn_tails']}), leaders {st['leaders']}, "
          f"entries checked {st['entries_checked']}, client answers {st['acked']} logged "
          f"+ {st['unlogged']} refused before any command, "
          f"converged {result.converged_after} s after the faults")
    print(f"  trace sha256 {result.trace_hash}")
    if problems:
        print(f"FAILED ({len(problems)} violations):")
        for p in problems[:20]:
            print(f"  {p}")
        print(f"reproduce: {repro_command(opts)}")
    else:
        print("OK")


def _sweep_one(args_and_seed) -> tuple[int, list[str], float, float, int]:
    args, seed = args_and_seed
    opts = options_from(args, seed)
    opts.trace_file = None
    result, problems = run_one(opts, check=_check_seconds(args, opts))
    return seed, problems, result.wall_seconds, result.sim_seconds, result.messages


def sweep(args: argparse.Namespace) -> int:
    first, _, last = args.seeds.partition("..")
    seeds = list(range(int(first), int(last or first) + 1))
    started = time.perf_counter()
    failing: list[tuple[int, list[str]]] = []
    sim_total = msg_total = 0.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        for seed, problems, _wall, sim_s, msgs in pool.imap_unordered(_sweep_one, [(args, s) for s in seeds]):
            sim_total += sim_s
            msg_total += msgs
            if problems:
                failing.append((seed, problems))
                print(f"seed {seed} FAILED: {problems[0]}", flush=True)
    wall = time.perf_counter() - started
    check = args.self_check if args.self_check == "full" else f"{float(args.self_check):g} s"
    print(f"sweep: {len(seeds)} seeds, {len(failing)} failing, {wall:.1f} s wall, "
          f"{sim_total / wall:.0f} sim s/wall s, {msg_total / wall:.0f} messages/s over {args.jobs} processes "
          f"(self-check: {check} re-run per seed)")
    for seed, _ in sorted(failing):
        print(f"  {repro_command(options_from(args, seed))}")
    return 1 if failing else 0


def shrink(opts: Options) -> Options:
    """Drop faults while the run still fails: halves, then quarters, ... then single faults."""
    keep = sorted(opts.keep if opts.keep is not None else {f.index for f in World(opts).faults})

    def fails(subset: list[int]) -> bool:
        trial = Options(**{**opts.__dict__, "keep": set(subset), "trace_file": None})
        return bool(World(trial).run().violations)

    chunk = max(1, len(keep) // 2)
    while True:
        i, changed = 0, False
        while i < len(keep):
            trial = keep[:i] + keep[i + chunk:]
            if fails(trial):
                keep, changed = trial, True
                print(f"  shrink: {len(keep)} faults still fail", flush=True)
            else:
                i += chunk
        if chunk == 1 and not changed:
            break
        chunk = max(1, chunk // 2)
    return Options(**{**opts.__dict__, "keep": set(keep)})


def _check_seconds(args: argparse.Namespace, opts: Options) -> float:
    if getattr(args, "no_self_check", False):
        return 0.0
    return opts.duration if args.self_check == "full" else float(args.self_check)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m sim", description=__doc__)
    is_sweep = bool(argv) and argv[0] == "sweep"
    if is_sweep:
        argv = argv[1:]
        ap.add_argument("--seeds", default="1..200", help="A..B, inclusive")
        ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds (45; 90 with --membership)")
    ap.add_argument("--quiet", type=float, default=None,
                    help="fault-free seconds at the end (25; 40 with --membership)")
    ap.add_argument("--faults", default="default", help=f"comma list of {', '.join(fl.ALL_KINDS)}; or none")
    ap.add_argument("--fault-rate", type=float, default=0.3, help="faults per simulated second")
    ap.add_argument("--workload", default="mixed", choices=sorted(WORKLOADS))
    ap.add_argument("--membership", action="store_true", help="two nodes join and two leave during the run")
    ap.add_argument("--keep", default=None, help="only these fault numbers of the schedule")
    ap.add_argument("--self-check", default=f"{SELF_CHECK_SECONDS:g}", metavar="SECONDS",
                    help="re-run the first SECONDS in this process, compare the traces (0: off; full: the whole run)")
    ap.add_argument("--plant", default="",
                    help="test only: plant a known bug (skip-vmid-check, ack-before-sync, release-migration-lock, "
                         "ignore-shared-clones)")
    if not is_sweep:
        ap.add_argument("--trace", default=None, help="write the trace to this file")
        ap.add_argument("--shrink", action="store_true", help="on failure, reduce the fault schedule")
        ap.add_argument("--no-self-check", action="store_true", help="as --self-check 0")
    args = ap.parse_args(argv)
    if is_sweep:
        return sweep(args)
    opts = options_from(args)
    result, problems = run_one(opts, check=_check_seconds(args, opts))
    report(opts, result, problems)
    if problems and args.shrink:
        small = shrink(opts)
        print(f"minimal schedule ({len(small.keep)} faults):")
        for fault in World(small).faults:
            print(f"  {fault.describe()}")
        print(f"reproduce: {repro_command(small)}")
    return 1 if problems else 0
