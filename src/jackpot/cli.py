"""The `jackpot` command. Thin: parses flags (generated from the config dataclasses), calls a
procedure, prints. Any JackpotError becomes one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import GROUPS, RunConfig, run_hash, scalar_type, split_list
from .errors import JackpotError, check_fraction


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one `jackpot: error:` line (and exit 2), like every other
    bad input; `--help` still prints the full usage."""

    def error(self, message: str):
        where = "" if self.prog == "jackpot" else f"{self.prog}: "  # a subcommand names itself, once
        self.exit(2, f"jackpot: error: {where}{message} (see {self.prog} --help)\n")


# --- flags from dataclasses ---------------------------------------------------------------------

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...]) -> None:
    """One flag per field of the named config groups (--lr, --fraction...), stored as group.field."""
    parser.add_argument("--seed", type=int, default=0, help="seed of every random act of the run (default: 0)")
    parser.set_defaults(_groups=groups)
    for group_name in groups:
        group = parser.add_argument_group(group_name)
        for f in dataclasses.fields(GROUPS[group_name]):
            dest = f"{group_name}.{f.name}"
            help_text = f"{f.metadata['help']} (default: {f.default})"
            if f.type == "bool":
                group.add_argument(_flag(f.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=f.default, help=help_text)
            else:
                group.add_argument(_flag(f.name), dest=dest, type=scalar_type(f.type)[0], default=f.default,
                                   choices=f.metadata.get("choices"), help=help_text, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace, kind: str, seed: int | None = None) -> RunConfig:
    groups = {}
    for group_name in args._groups:
        cls = GROUPS[group_name]
        groups[group_name] = cls(**{f.name: getattr(args, f"{group_name}.{f.name}") for f in dataclasses.fields(cls)})
    return RunConfig(kind=kind, seed=args.seed if seed is None else seed, **groups)


# --- commands -------------------------------------------------------------------------------------

def _device(name: str) -> str:
    import torch
    from .launch import ddp
    if ddp.dist_env().world_size > 1:  # under torchrun: one process per device
        _, device = ddp.init("gloo" if name == "cpu" else None)
        return "cpu" if name == "cpu" else str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise JackpotError(f"--device {name}: CUDA is not available on this machine")
    try:
        torch.device(name)
    except RuntimeError:
        raise JackpotError(f"unknown --device {name!r}; use cpu, cuda, cuda:N or auto") from None
    return name


def _seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return [default]
    try:
        seeds = [int(s) for s in split_list(text)]
    except ValueError:
        seeds = []
    if not seeds:
        raise JackpotError(f"--seeds takes comma-separated integers, got {text!r}")
    return seeds


def _positive(args, *names: str) -> None:
    """--threads, --workers, --rounds... must be positive when given (0 = torch's default threads)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "threads" else 1):
            raise JackpotError(f"--{name} must be {'>= 0' if name == 'threads' else 'positive'}, got {value}")


def _run_all(args, kind: str) -> tuple[list, list]:
    """Build one config per seed and run them (in a process pool with --workers)."""
    import torch
    from .procedures import run, run_job
    from .store import Run, is_primary, store_root

    _positive(args, "threads", "workers")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    cfgs = [config_from_args(args, kind, seed=s) for s in _seeds(args.seeds, args.seed)]
    if args.print_dir:
        return cfgs, [Run(store_root(args.store) / f"{cfg.kind}-{run_hash(cfg)}") for cfg in cfgs]
    if args.workers > 1 and len(cfgs) > 1:
        from .launch.local import run_parallel
        paths = run_parallel(run_job, [(cfg, args.store, device, args.wait) for cfg in cfgs],
                             workers=args.workers, threads=args.threads or 1)
        return cfgs, [Run(p) for p in paths]
    say = print if is_primary() else (lambda _line: None)
    return cfgs, [run(cfg, root=args.store, device=device, progress=say, wait=args.wait) for cfg in cfgs]


def _writer() -> bool:
    """Rank 0 of a torchrun job (or a plain process) prints and writes reports."""
    from .store import is_primary
    return is_primary()


def _report_dir(args, cfgs):
    from .store import store_root
    study = dataclasses.replace(cfgs[0], seed=0)
    seeds = "-".join(str(c.seed) for c in cfgs)
    return store_root(args.store) / "reports" / f"{study.kind}-{run_hash(study)}-seeds-{seeds}"


def cmd_lottery(args) -> int:
    from .analysis.lottery_report import aggregate, format_table, plot
    from .store import atomic_write_text

    cfgs, runs = _run_all(args, "lottery")
    if not _writer():
        return 0
    if args.print_dir:
        print("\n".join(str(r.path) for r in runs))
        return 0
    rows = aggregate(runs)
    print()
    print(format_table(rows))
    out = _report_dir(args, cfgs)
    png = plot(rows, out / "accuracy_vs_weights.png")
    atomic_write_text(out / "table.md", format_table(rows) + "\n")
    print(f"\nruns:  {', '.join(str(r.path) for r in runs)}\nplot:  {png}\ntable: {out / 'table.md'}")
    return 0


def _cmd_single_stage(args, kind: str, label) -> int:
    from .analysis.summary import format_summary_table
    from .store import atomic_write_text

    cfgs, runs = _run_all(args, kind)
    if not _writer():
        return 0
    if args.print_dir:
        print("\n".join(str(r.path) for r in runs))
        return 0
    table = format_summary_table(runs, label(cfgs[0]))
    print()
    print(table)
    out = _report_dir(args, cfgs)
    atomic_write_text(out / "table.md", table + "\n")
    print(f"\nruns:  {', '.join(str(r.path) for r in runs)}\ntable: {out / 'table.md'}")
    return 0


def cmd_pai(args) -> int:
    from .analysis.summary import method_label
    return _cmd_single_stage(args, "pai", method_label)


def cmd_sparse(args) -> int:
    from .analysis.summary import method_label
    return _cmd_single_stage(args, "sparse", method_label)


def _run_line(run) -> tuple[str, str, str]:
    """(what, weights remaining, status) of a run, whatever its procedure."""
    from .analysis.lottery_report import level_results
    from .analysis.summary import method_label, run_diverged, run_summary
    from .procedures import finished_state
    from .procedures import procedure
    cfg = run.config()
    if procedure(cfg.kind).levels:
        levels = level_results(run)
        done = finished_state(run.path, cfg) is not None  # every stage whole, controls included
        what = f"IMP {len(levels) - 1 if levels else 0}/{cfg.lottery.levels} levels"
        low = f"{100 * levels[-1]['density']:.1f}%" if levels else "-"
        stages = [d for row in levels for d in row["diverged"].values()]
        diverged = f"diverged ({sum(stages)} of {len(stages)} stages)" if any(stages) else ""
    else:
        summary = run_summary(run)
        done = summary is not None
        what = method_label(cfg)
        low = f"{100 * summary['density']:.1f}%" if summary else "-"
        diverged = "diverged" if done and run_diverged(run) else ""
    status = "running" if run.is_locked() else ((diverged or "done") if done else "partial")
    return what, low, status


def cmd_ls(args) -> int:
    from .store import list_runs, store_root

    runs = list_runs(args.store)
    if not runs:
        print(f"no runs in {store_root(args.store)}")
        return 0
    print(f"{'run':<22} {'dataset':<14} {'model':<14} {'seed':>4}  {'what':<22} {'weights':>8}  status")
    for run in runs:
        try:
            cfg = run.config()
        except JackpotError:  # one damaged run must not hide the others (`show` says what is wrong)
            print(f"{run.path.name:<22} {'?':<14} {'?':<14} {'?':>4}  {'?':<22} {'-':>8}  damaged (config.json)")
            continue
        what, low, status = _run_line(run)
        print(f"{run.path.name:<22} {cfg.data.dataset[:14]:<14} {cfg.model.model:<14} {cfg.seed:>4}  "
              f"{what:<22} {low:>8}  {status}")
    return 0


def cmd_show(args) -> int:
    from .analysis.lottery_report import aggregate, format_table, level_results
    from .analysis.summary import format_summary_table, run_summary
    from .config import canonical
    from .procedures import procedure
    from .store import find_run

    run = find_run(args.run, args.store)
    cfg = run.config()
    levels = procedure(cfg.kind).levels
    if args.json:
        body = level_results(run) if levels else run_summary(run)
        print(json.dumps({"run": str(run.path), "config": canonical(cfg), "results": body}, indent=2))
        return 0
    print(f"run {run.path}")
    print("settings: " + json.dumps(canonical(cfg), sort_keys=True))
    print()
    if levels:
        print(format_table(aggregate([run])))
    else:
        print(format_summary_table([run], _run_line(run)[0]))
    return 0


def _branch_parser(pcfg: RunConfig) -> Parser:
    from .procedures.branches import BRANCH_KINDS
    parser = Parser(
        prog="jackpot branch", description="Train an ablation or transfer of a ticket; every data and "
        "training flag defaults to the parent run's value. Kinds: " + ", ".join(BRANCH_KINDS))
    parser.add_argument("run", help="parent run (directory, name or hash prefix)")
    parser.add_argument("kind", choices=BRANCH_KINDS)
    parser.add_argument("--level", type=int, default=1, help="lottery level whose ticket to branch from")
    parser.add_argument("--branch-seed", type=int, default=0, help="seed of the branch's own random draws")
    parser.add_argument("--rescale", action="store_true", help="reinit: rescale to the remaining fan-in")
    parser.add_argument("--exclude", default="", help="transfer: layers re-created instead of transferred")
    parser.add_argument("--retrain", default="", choices=("", "rewind", "lr-rewind", "finetune"),
                        help="lottery tickets: retrain by weight rewinding, LR rewinding or fine-tuning "
                             "(default: as the run did)")
    add_config_flags(parser, ("data", "train"))
    parser.set_defaults(**{f"{g}.{f.name}": getattr(getattr(pcfg, g), f.name)
                           for g in ("data", "train") for f in dataclasses.fields(GROUPS[g])}, seed=pcfg.seed)
    _common(parser)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    _wait_flag(parser)
    return parser


def cmd_branch(argv: list[str]) -> int:
    """Two parses: the first finds the parent run, whose config then gives the defaults of every
    data and training flag in the second."""
    from .procedures.branches import BranchSpec, run_branch
    from .store import find_run

    first = _branch_parser(RunConfig()).parse_args(argv)  # also prints --help and syntax errors
    parent = find_run(first.run, first.store)
    pcfg = parent.config()
    args = _branch_parser(pcfg).parse_args(argv)
    _positive(args, "threads")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(pcfg, **{g: GROUPS[g](**{f.name: getattr(args, f"{g}.{f.name}")
                                                        for f in dataclasses.fields(GROUPS[g])})
                                       for g in ("data", "train")})
    spec = BranchSpec(args.kind, args.level, args.branch_seed, args.rescale, args.exclude, args.retrain)
    path = run_branch(parent, spec, cfg, device=_device(args.device), wait=args.wait)
    from .procedures.branches import branch_summary
    s = branch_summary(path)
    print(f"branch {args.kind} of {parent.path.name} level {args.level}: {100 * s['density']:.1f}% weights, "
          f"test acc {100 * s['final']['test_acc']:.1f}%\nresults: {path}")
    return 0


def cmd_compare(args) -> int:
    from .analysis.similarity import format_similarity, mask_similarity, resolve_mask
    a, b = resolve_mask(args.a, args.store), resolve_mask(args.b, args.store)
    rows = mask_similarity(a, b)
    print(json.dumps(rows, indent=1) if args.json else format_similarity(rows, args.a, args.b))
    return 0


def cmd_stability(args) -> int:
    from .procedures.stability import format_stability, run_stability
    from .store import find_run
    _positive(args, "threads")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    run = find_run(args.run, args.store)
    try:
        levels = [int(x) for x in split_list(args.levels)]
    except ValueError:
        raise JackpotError(f"--levels takes comma-separated integers, got {args.levels!r}") from None
    if not levels or not split_list(args.rewinds):
        raise JackpotError("give at least one --levels and one --rewinds value")
    results = run_stability(run, levels, split_list(args.rewinds), args.alphas, device=_device(args.device))
    print()
    print(format_stability(results))
    return 0


def _trained_sparse(args):
    from .export.runs import trained_sparse
    from .store import find_run
    model, masks, arch = trained_sparse(find_run(args.run, args.store), args.level, args.arm)
    return model, masks, arch["input_shape"], arch["num_classes"], arch


def cmd_export(args) -> int:
    from .export import export_model, save_exported, summary
    _positive(args, "threads")
    if args.threads < 1:
        raise JackpotError("--threads must be positive for export (it measures each layer at that count)")
    if Path(args.output).is_dir() or not Path(args.output).name:
        raise JackpotError(f"-o {args.output!r} must be a file path, e.g. model.pt")
    model, masks, shape, classes, arch = _trained_sparse(args)
    exported = export_model(model, masks, args.batch_size, threads=args.threads, arch=arch)
    size = save_exported(exported, args.output)
    rows = summary(exported)
    dense_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    for r in rows:
        sp = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        print(f"{r['name']:<24} {r['format']:<6} nnz {r['nnz']:>10,}  forward {sp:>7} vs dense  {r['note']}")
    print(f"saved {args.output}: {size / 1024:.1f} KiB (dense state: {dense_bytes / 1024:.1f} KiB, "
          f"{size / dense_bytes:.2f}x); load with jackpot.export.load_exported")
    return 0


def cmd_bench(args) -> int:
    from .export.bench import benchmark, format_benchmark
    _positive(args, "rounds")
    if args.threads < 1:
        raise JackpotError(f"--threads must be positive, got {args.threads}")
    if args.run and (args.model or args.density is not None):
        raise JackpotError("give either a RUN or --model/--density, not both")
    if args.run:
        model, masks, shape, classes, _ = _trained_sparse(args)
    elif args.model and args.density is not None:
        from .export.runs import random_sparse
        model, masks, arch = random_sparse(args.model, args.density, args.budget)
        shape, classes = arch["input_shape"], arch["num_classes"]
    else:
        raise JackpotError("give a RUN, or --model NAME and --density D")
    result = benchmark(model, masks, shape, args.batch_size, args.threads, args.rounds, classes)
    print(json.dumps(result, indent=1) if args.json else format_benchmark(result))
    return 0


def cmd_inspect(args) -> int:
    from .analysis.inspect import format_inspect, inspect_budget
    _positive(args, "threads")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    shape, classes = None, None
    if args.dataset:
        from .data import load_dataset
        ds = load_dataset(args.dataset, root=args.data_root)
        shape, classes = ds.input_shape, ds.num_classes
    check_fraction(args.density, "--density")
    info = inspect_budget(args.model, args.budget, args.density, shape, classes, args.keep_first,
                          args.keep_output, split_list(args.keep_layers), args.include_bias, args.flops)
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


def cmd_models(args) -> int:
    from .models import list_models
    for info in list_models():
        shape = "x".join(map(str, info.default_input_shape))
        print(f"{info.name:<16} {shape:>10} {info.default_num_classes:>5} classes  {info.description}")
    return 0


def cmd_datasets(args) -> int:
    from .data import list_datasets
    for name, description in list_datasets():
        print(f"{name:<16} {description}")
    return 0


def cmd_data_fetch(args) -> int:
    from .data.fetch import fetch_dataset
    path = fetch_dataset(args.name, args.root)
    print(f"{args.name}: ready in {path}")
    return 0


def cmd_recipes(args) -> int:
    from .recipes import format_recipe, format_recipe_list, get_recipe
    print(format_recipe(get_recipe(args.name)) if args.name else format_recipe_list())
    return 0


def _recipe_name(argv: list[str]) -> str | None:
    """The value of --recipe in a command line (read before parsing: it sets the flag defaults)."""
    found = []
    for i, arg in enumerate(argv):
        if arg == "--recipe" and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith("--recipe="):
            found.append(arg.partition("=")[2])
    if len(found) > 1:
        raise JackpotError(f"give one --recipe, got {len(found)}: {', '.join(found)}")
    return found[0] if found else None


def build_parser(recipe=None) -> argparse.ArgumentParser:
    """`recipe` (a jackpot.recipes.Recipe) fills in the defaults of its command's flags."""
    parser = Parser(prog="jackpot", description="Sparse neural-network training research.")
    sub = parser.add_subparsers(dest="command", required=True)

    lot = sub.add_parser("lottery", help="iterative magnitude pruning with rewinding and controls",
                         description="Lottery tickets: train, prune, rewind, repeat; with the random-reinit "
                                     "and random-mask controls at every level. Re-running resumes; a larger "
                                     "--levels extends a finished run.")
    add_config_flags(lot, ("data", "model", "train", "masks", "prune", "lottery"))
    _run_flags(lot, cmd_lottery)

    pai = sub.add_parser("pai", help="prune at initialisation (SNIP, GraSP, SynFlow, random tickets), then train",
                         description="Score the initial network, keep a per-layer budget, train the sparse "
                                     "network. Random tickets: --score random --budget smart-ratio.")
    add_config_flags(pai, ("data", "model", "train", "masks", "pai"))
    _run_flags(pai, cmd_pai)

    sparse = sub.add_parser("sparse", help="sparse training from scratch (RigL, SET, SNFS, DSR, static, GMP) "
                                           "and dense / small-dense baselines",
                            description="Dynamic sparse training with FLOPs accounting (RigL appendix H).")
    add_config_flags(sparse, ("data", "model", "train", "masks", "sparse"))
    _run_flags(sparse, cmd_sparse)

    ls = sub.add_parser("ls", help="list runs in the store")
    _common(ls)
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser("show", help="a run's summary table")
    show.add_argument("run", help="run directory, name or hash prefix")
    show.add_argument("--json", action="store_true")
    _common(show)
    show.set_defaults(func=cmd_show)

    sub.add_parser("branch", help="ablation or transfer of a ticket: reinit, rearrange, shuffle, invert, "
                                   "retrain (another optimizer, schedule or dataset)", add_help=False)

    cmp_ = sub.add_parser("compare", help="per-layer Jaccard overlap of two masks")
    cmp_.add_argument("a", help="RUN[:LEVEL] (lottery level, default: last) or RUN (pai/sparse) or a mask .pt file")
    cmp_.add_argument("b")
    cmp_.add_argument("--json", action="store_true")
    _common(cmp_)
    cmp_.set_defaults(func=cmd_compare)

    stab = sub.add_parser("stability", help="linear mode connectivity: error barrier between two copies "
                                            "trained from a rewind point with different data orders")
    stab.add_argument("run", help="a lottery run")
    stab.add_argument("--levels", default="0", help="comma-separated levels (0 = dense)")
    stab.add_argument("--rewinds", default="0it", help="comma-separated rewind steps, e.g. 0it,20it,1ep")
    stab.add_argument("--alphas", type=int, default=11, help="interpolation points (incl. both ends)")
    stab.add_argument("--device", default="auto")
    stab.add_argument("--threads", type=int, default=0)
    _common(stab)
    stab.set_defaults(func=cmd_stability)

    exp = sub.add_parser("export", help="turn a trained sparse network into a compact, fast inference model")
    exp.add_argument("run")
    exp.add_argument("-o", "--output", required=True, help="output file (.pt)")
    exp.add_argument("--level", type=int, default=None, help="lottery level (default: the last)")
    exp.add_argument("--arm", default="ticket", help="lottery arm (ticket, reinit, random)")
    exp.add_argument("--batch-size", type=int, default=1, help="batch size to optimise the layer formats for")
    exp.add_argument("--threads", type=int, default=1)
    _common(exp)
    exp.set_defaults(func=cmd_export)

    ben = sub.add_parser("bench", help="measured speed: dense vs masked dense vs real sparse")
    ben.add_argument("run", nargs="?", help="a run (or give --model and --density)")
    ben.add_argument("--model")
    ben.add_argument("--density", type=float)
    ben.add_argument("--budget", default="uniform")
    ben.add_argument("--level", type=int, default=None)
    ben.add_argument("--arm", default="ticket")
    ben.add_argument("--batch-size", type=int, default=1)
    ben.add_argument("--threads", type=int, default=1)
    ben.add_argument("--rounds", type=int, default=7)
    ben.add_argument("--json", action="store_true")
    _common(ben)
    ben.set_defaults(func=cmd_bench)

    ins = sub.add_parser("inspect", help="per-layer densities (and FLOPs) of a budget on a model")
    ins.add_argument("--model", default=RunConfig().model.model,
                     help=f"model name (default: {RunConfig().model.model}, as for every command)")
    ins.add_argument("--budget", default="erk", help="uniform, uniform-first-dense, er, erk, smart-ratio, global")
    ins.add_argument("--density", type=float, required=True, help="fraction of prunable weights kept")
    ins.add_argument("--dataset", help="take the input shape and class count from this dataset")
    ins.add_argument("--data-root")
    ins.add_argument("--keep-first", action="store_true")
    ins.add_argument("--keep-output", action="store_true")
    ins.add_argument("--keep-layers", default="")
    ins.add_argument("--include-bias", action="store_true")
    ins.add_argument("--flops", action="store_true", help="add inference FLOPs per layer")
    ins.add_argument("--json", action="store_true")
    ins.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    ins.set_defaults(func=cmd_inspect)

    from .sweep_cli import register as register_sweep_commands  # sweep, report
    register_sweep_commands(sub, recipe)

    rec = sub.add_parser("recipes", help="published settings by name (use one with --recipe NAME)")
    rec.add_argument("name", nargs="?", help="a recipe: print its settings, source and expected numbers")
    rec.set_defaults(func=cmd_recipes)

    if recipe is not None:
        {"lottery": lot, "pai": pai, "sparse": sparse}[recipe.kind].set_defaults(**recipe.resolved())

    sub.add_parser("models", help="list model names").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list dataset names").set_defaults(func=cmd_datasets)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download a dataset and verify its checksums")
    fetch.add_argument("name")
    fetch.add_argument("--root", default=None, help="directory to download into (default: $JACKPOT_DATA or ~/.jackpot/data)")
    fetch.set_defaults(func=cmd_data_fetch)
    return parser


def _run_flags(p: argparse.ArgumentParser, func) -> None:
    p.add_argument("--recipe", help="published settings by name (see `jackpot recipes`); flags given "
                                    "on the command line still win")
    p.add_argument("--seeds", help="comma-separated seeds: one run each, then a table over seeds")
    _common(p)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--workers", type=int, default=1, help="run the seeds in this many processes")
    p.add_argument("--print-dir", action="store_true", help="print the run directories and exit")
    _wait_flag(p)
    p.set_defaults(func=func)


def _wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="when another process is computing the same run, "
                                                       "wait for it and then finish, instead of refusing")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="experiment store directory (default: $JACKPOT_STORE or ./runs)")


# commands that compute stages into the store (the others only read it, or write a report)
COMPUTING_COMMANDS = ("lottery", "pai", "sparse", "sweep", "branch", "stability")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["branch"]:
            return cmd_branch(argv[1:])
        recipe = _recipe_name(argv)
        kind = argv[1] if argv[:1] == ["sweep"] and len(argv) > 1 else (argv[0] if argv else None)
        if recipe is not None and kind in ("lottery", "pai", "sparse"):
            from .recipes import get_recipe
            recipe = get_recipe(recipe, kind)
            if "dataset" not in recipe.settings and not any(a == "--dataset" or a.startswith("--dataset=")
                                                             for a in argv):
                raise JackpotError(f"recipe {recipe.name} names no dataset jackpot can read: give --dataset "
                                   "(e.g. npz:PATH); see `jackpot recipes " + recipe.name + "`")
        else:
            recipe = None
        args = build_parser(recipe).parse_args(argv)
        return args.func(args)
    except JackpotError as e:
        print(f"jackpot: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("jackpot: interrupted; finished stages are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # a case no check foresaw: still one line (JACKPOT_DEBUG=1 shows the traceback)
        import os
        if os.environ.get("JACKPOT_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        kept = "finished stages are kept; " if argv[:1] and argv[0] in COMPUTING_COMMANDS else ""
        print(f"jackpot: error: {type(e).__name__}: {first} ({kept}JACKPOT_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
