"""The computing commands: one per registered procedure (`jackpot lottery|pai|sparse`, built from
the registry), `jackpot branch` and `jackpot stability`."""
from __future__ import annotations

import argparse
import dataclasses

from .. import progress
from ..analysis.lottery_report import aggregate, format_table, plot
from ..analysis.summary import format_summary_table, method_label
from ..config import RunConfig, run_hash, split_list
from ..errors import JackpotError
from ..launch.device import resolve_device
from ..launch.grid import preflight
from ..launch.local import run_parallel
from ..procedures import procedure, procedures, run, run_job
from ..procedures.branches import BRANCH_KINDS, BranchSpec, branch_summary, run_branch
from ..procedures.stability import format_stability, run_stability
from ..store import Run, atomic_write_text, find_run, is_primary, store_root
from .flags import (Parser, add_config_flags, config_from_args, device_flags, groups_from_args, positive,
                    quiet_flag, recipe_flag, seeds, set_threads, store_flag, wait_flag)


def run_all(args, kind: str) -> tuple[list, list]:
    """Build one config per seed and run them (in a process pool with --workers)."""
    positive(args, "workers")
    set_threads(args)
    device = resolve_device(args.device)
    cfgs = [config_from_args(args, kind, seed=s) for s in seeds(args.seeds, args.seed)]
    if args.print_dir:  # the directories the runs would have: only for configs a run would accept
        preflight(cfgs, root=args.store)
        return cfgs, [Run(store_root(args.store) / f"{cfg.kind}-{run_hash(cfg)}") for cfg in cfgs]
    if args.workers > 1 and len(cfgs) > 1:
        paths = run_parallel(run_job, [(cfg, args.store, device, args.wait, args.quiet) for cfg in cfgs],
                             workers=args.workers, threads=args.threads or 1)
        return cfgs, [Run(p) for p in paths]
    progress.set_quiet(args.quiet)
    say = _say(args)
    return cfgs, [run(cfg, root=args.store, device=device, progress=say, wait=args.wait) for cfg in cfgs]


def _say(args):
    """Where progress lines go: stdout on rank 0, nowhere with --quiet (tables are still printed)."""
    return print if is_primary() and not args.quiet else (lambda _line: None)


def _report_dir(args, cfgs):
    study = dataclasses.replace(cfgs[0], seed=0)
    names = "-".join(str(c.seed) for c in cfgs)
    return store_root(args.store) / "reports" / f"{study.kind}-{run_hash(study)}-seeds-{names}"


def cmd_procedure(args) -> int:
    """Run the seeds, then print and save their table (per level, or one row per run)."""
    cfgs, runs = run_all(args, args._kind)
    if not is_primary():  # rank 0 of a torchrun job (or a plain process) prints and writes reports
        return 0
    if args.print_dir:
        print("\n".join(str(r.path) for r in runs))
        return 0
    out = _report_dir(args, cfgs)
    if procedure(args._kind).levels:
        rows = aggregate(runs)
        table = format_table(rows)
        files = f"plot:  {plot(rows, out / 'accuracy_vs_weights.png')}\n"
    else:
        table, files = format_summary_table(runs, method_label(cfgs[0])), ""
    print()
    print(table)
    atomic_write_text(out / "table.md", table + "\n")
    print(f"\nruns:  {', '.join(str(r.path) for r in runs)}\n{files}table: {out / 'table.md'}")
    return 0


def run_flags(p: argparse.ArgumentParser) -> None:
    recipe_flag(p)
    p.add_argument("--seeds", help="comma-separated seeds: one run each, then a table over seeds")
    store_flag(p)
    device_flags(p)
    p.add_argument("--workers", type=int, default=1, help="run the seeds in this many processes")
    p.add_argument("--print-dir", action="store_true", help="print the run directories and exit")
    quiet_flag(p)
    wait_flag(p)


def _branch_parser(pcfg: RunConfig | None) -> Parser:
    """The branch command's flags, their defaults the parent run's (`pcfg`); None: the parent is
    not known yet (the first parse), and the help says so instead of showing any default."""
    parser = Parser(
        prog="jackpot branch", description="Train an ablation or transfer of a ticket; every data and "
        "training flag defaults to the parent run's value (`jackpot branch RUN KIND --help` shows "
        "them). Kinds: " + ", ".join(BRANCH_KINDS))
    known = pcfg is not None  # the first parse only looks for the parent: nothing is required yet
    parser.add_argument("run", nargs=None if known else "?", help="parent run (directory, name or hash prefix)")
    parser.add_argument("kind", nargs=None if known else "?", choices=BRANCH_KINDS)
    parser.add_argument("--level", type=int, default=1, help="lottery level whose ticket to branch from "
                        "(default: 1)")
    parser.add_argument("--branch-seed", type=int, default=0, help="seed of the branch's own random draws")
    parser.add_argument("--rescale", action="store_true", help="reinit: rescale to the remaining fan-in")
    parser.add_argument("--exclude", default="", help="transfer: layers re-created instead of transferred")
    parser.add_argument("--retrain", default="", choices=("", "rewind", "lr-rewind", "finetune"),
                        help="lottery tickets: retrain by weight rewinding, LR rewinding or fine-tuning "
                             "(default: as the run did)")
    add_config_flags(parser, ("data", "train"), defaults=pcfg)
    store_flag(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    quiet_flag(parser)
    wait_flag(parser)
    return parser


def cmd_branch(argv: list[str]) -> int:
    """Two parses: the first finds the parent run, whose config then gives the defaults of every
    data and training flag in the second."""
    rest = [a for a in argv if a not in ("-h", "--help")]
    if len(rest) == len(argv):
        first = _branch_parser(RunConfig()).parse_args(argv)  # syntax errors, as every command
    else:  # --help: with RUN and KIND, their defaults are the parent run's; without, it says so
        try:
            first, _ = _branch_parser(RunConfig()).parse_known_args(rest)
        except SystemExit:
            first = None
        if first is None or not first.run:
            _branch_parser(None).parse_args(["--help"])
    parent = find_run(first.run, first.store)
    pcfg = parent.config()
    args = _branch_parser(pcfg).parse_args(argv)
    set_threads(args)
    cfg = dataclasses.replace(pcfg, **groups_from_args(args, ("data", "train")))
    spec = BranchSpec(args.kind, args.level, args.branch_seed, args.rescale, args.exclude, args.retrain)
    progress.set_quiet(args.quiet)
    path = run_branch(parent, spec, cfg, device=resolve_device(args.device), wait=args.wait,
                      progress=_say(args))
    s = branch_summary(path)
    print(f"branch {args.kind} of {parent.path.name} level {args.level}: {100 * s['density']:.1f}% weights, "
          f"test acc {100 * s['final']['test_acc']:.1f}%\nresults: {path}")
    return 0


def cmd_stability(args) -> int:
    set_threads(args)
    run = find_run(args.run, args.store)
    try:
        levels = [int(x) for x in split_list(args.levels)]
    except ValueError:
        raise JackpotError(f"--levels takes comma-separated integers, got {args.levels!r}") from None
    if not levels or not split_list(args.rewinds):
        raise JackpotError("give at least one --levels and one --rewinds value")
    progress.set_quiet(args.quiet)
    results = run_stability(run, levels, split_list(args.rewinds), args.alphas, device=resolve_device(args.device),
                            progress=_say(args))
    print()
    print(format_stability(results))
    return 0


def register(sub, recipe=None) -> None:
    """One command per registered procedure (its flags from its config groups; `recipe` fills in
    the defaults of its kind's command), then branch and stability."""
    for proc in procedures():
        p = sub.add_parser(proc.kind, help=proc.help, description=proc.description)
        add_config_flags(p, proc.config.groups)
        run_flags(p)
        p.set_defaults(func=cmd_procedure, _kind=proc.kind)
        if recipe is not None and recipe.kind == proc.kind:
            p.set_defaults(**recipe.resolved())

    sub.add_parser("branch", help="ablation or transfer of a ticket: reinit, rearrange, shuffle, invert, "
                                   "retrain (another optimizer, schedule or dataset)", add_help=False)

    stab = sub.add_parser("stability", help="linear mode connectivity: error barrier between two copies "
                                            "trained from a rewind point with different data orders")
    stab.add_argument("run", help="a lottery run")
    stab.add_argument("--levels", default="0", help="comma-separated levels (0 = dense)")
    stab.add_argument("--rewinds", default="0it", help="comma-separated rewind steps, e.g. 0it,20it,1ep")
    stab.add_argument("--alphas", type=int, default=11, help="interpolation points (incl. both ends)")
    stab.add_argument("--device", default="auto")
    stab.add_argument("--threads", type=int, default=0)
    quiet_flag(stab)
    store_flag(stab)
    stab.set_defaults(func=cmd_stability)
