"""`jackpot sweep` and `jackpot report`."""
from __future__ import annotations

import signal

from ..analysis import report
from ..config import kind_groups
from ..errors import JackpotError
from ..launch.device import resolve_device
from ..launch.grid import expand, parse_grid, preflight
from ..launch.local import LocalLauncher
from ..launch.ray_launcher import RayLauncher
from ..launch.slurm import SlurmLauncher
from ..launch.sweep import Sweep, run_sweep
from ..store import store_root
from .flags import add_config_flags, config_from_args, store_flag

LAUNCHERS = ("local", "ray", "slurm")


def register(sub, recipe=None) -> None:
    """Add the sweep/report subcommands to the `jackpot` parser (`recipe` fills in the defaults
    of its kind's flags, as for the single-run commands)."""
    sweep = sub.add_parser(
        "sweep", help="a grid of runs (methods x densities x seeds x ...) on local cores, Ray or SLURM",
        description="Expand --grid over any config fields into runs keyed by their hash and run the "
                    "unfinished ones. Killing and restarting a sweep loses and repeats nothing; two "
                    "sweeps sharing runs compute each run once. Example: jackpot sweep sparse "
                    "--duration 20ep --grid sparse.method=rigl,set --grid density=0.05,0.1 --grid seed=0,1,2 "
                    "--workers 4")
    kinds = sweep.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, groups in kind_groups().items():
        p = kinds.add_parser(kind, help=f"a grid of `jackpot {kind}` runs")
        add_config_flags(p, groups)
        g = p.add_argument_group("sweep")
        g.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="values of one config field (group.field, e.g. sparse.method, train.lr, seed; "
                            "a bare name when unique); repeat for more fields; separate values with ';' "
                            "when they hold commas")
        g.add_argument("--seeds", help="comma-separated seeds (same as --grid seed=...)")
        g.add_argument("--recipe", help="published settings by name (see `jackpot recipes`); flags and "
                                        "--grid values still win")
        g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                       help="local process pool (default), ray, or slurm (submitit job array)")
        g.add_argument("--workers", type=int, default=1, help="runs at once (local pool size, local Ray "
                                                              "cluster CPUs, SLURM array parallelism)")
        g.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
        g.add_argument("--device", default="cpu", help="cpu, cuda (runs round-robin over the GPUs) or cuda:N")
        g.add_argument("--retry-failed", action="store_true", help="retry runs that crashed before")
        g.add_argument("--ray-address", help="connect to this Ray cluster (HOST:PORT, ray://HOST:PORT or "
                                             "auto) instead of starting a local one")
        g.add_argument("--slurm-cluster", default="auto", choices=("auto", "slurm", "local"),
                       help="submitit executor: auto (SLURM when sbatch exists), slurm, local")
        g.add_argument("--slurm-partition")
        g.add_argument("--slurm-timeout-min", type=int, default=240)
        g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per array task")
        g.add_argument("--slurm-mem-gb", type=float)
        g.add_argument("--dry-run", action="store_true", help="write the sweep record, list the runs, run nothing")
        store_flag(p)
        p.set_defaults(func=cmd_sweep, _sweep_kind=kind)
        if recipe is not None and recipe.kind == kind:
            p.set_defaults(**recipe.resolved())

    rep = sub.add_parser("report", help="tables, plots and an HTML page from a store or a sweep",
                         description="Mean, std and count over seeds per method and density (Markdown, "
                                     "CSV), accuracy vs weights remaining and vs training FLOPs, per-layer "
                                     "densities, training curves (PNG, PDF), all on OUT/index.html.")
    rep.add_argument("source", nargs="?", help="a store directory (all its runs), or a sweep record "
                                               "(<store>/sweeps/NAME.json or its directory); default: the store")
    rep.add_argument("-o", "--output", required=True, help="output directory")
    rep.add_argument("--tensorboard", metavar="DIR", help="also write every run's metrics as TensorBoard "
                                                          "event files under DIR (needs jackpot[tb])")
    store_flag(rep)
    rep.set_defaults(func=cmd_report)


def _sweep_points(args):
    kind = args._sweep_kind
    specs = list(args.grid)
    if args.seeds is not None:
        specs.append(f"seed={args.seeds}")
    grid = parse_grid(specs, kind)
    points = expand(config_from_args(args, kind), grid)
    preflight([cfg for cfg, _ in points], [values for _, values in points], root=args.store, threads=args.threads)
    return kind, grid, points


def _launcher(args, sweep):
    if args.workers < 1 or args.threads < 1:
        raise JackpotError("--workers and --threads must be at least 1")
    if args.ray_address and args.launcher != "ray":
        raise JackpotError("--ray-address needs --launcher ray")
    if args.launcher == "ray":
        return RayLauncher(args.workers, args.threads, args.ray_address)
    if args.launcher == "slurm":
        return SlurmLauncher(sweep.dir / "submitit", args.workers, args.threads, args.slurm_cluster,
                             args.slurm_partition, args.slurm_timeout_min, args.slurm_gpus, args.slurm_mem_gb)
    return LocalLauncher(args.workers, args.threads)


def cmd_sweep(args) -> int:
    kind, grid, points = _sweep_points(args)
    device = resolve_device(args.device)
    sweep = Sweep.create(kind, points, grid, args.store)
    launcher = _launcher(args, sweep)  # checks the launcher (installed, address answers) before writing
    if args.launcher == "ray" and args.ray_address:
        launcher.start()  # connect now: an address that answers but is no Ray cluster fails here
        launcher.start = lambda: None
    record = sweep.write()
    print(f"sweep {sweep.name}: {len(points)} runs ({' x '.join(f'{len(v)} {k}' for k, v in grid.items()) or '1'})"
          f", launcher {args.launcher}\nrecord: {record}")
    if getattr(launcher, "note", ""):
        print(launcher.note)
    if args.dry_run:
        for r in sweep.runs:
            print(f"  {r['name']}  " + " ".join(f"{k}={v}" for k, v in r["values"].items()))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: stop the workers, keep finished runs
    state = run_sweep(sweep, launcher, device=device, threads=args.threads, retry_failed=args.retry_failed)
    failed = sorted(n for n, s in state.items() if s == "failed")
    diverged = sorted(n for n, s in state.items() if s == "diverged")
    if diverged:
        print(f"diverged ({len(diverged)}): {', '.join(diverged)}")
    if failed:
        print(f"failed ({len(failed)}): {', '.join(failed)}\n  errors: {sweep.dir / 'errors'}; "
              f"re-run with --retry-failed to try them again")
        return 1
    print(f"report: jackpot report {record} -o OUT/")
    return 0


def cmd_report(args) -> int:
    source = args.source or str(store_root(args.store))
    out = report.write_report(source, args.output, tensorboard=args.tensorboard)
    print(f"report: {out / 'index.html'}")
    for name in ("results.md", "results.csv"):
        print(f"table:  {out / name}")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt
