"""The commands about real sparse execution: `jackpot export`, `bench` and `inspect`."""
from __future__ import annotations

import json
from pathlib import Path

from ..analysis.inspect import format_inspect, inspect_budget
from ..config import RunConfig, split_list
from ..data import load_dataset
from ..errors import JackpotError, check_fraction
from ..export import export_model, save_exported, summary
from ..export.bench import benchmark, format_benchmark
from ..export.runs import random_sparse, trained_sparse
from ..launch.device import resolve_device
from ..store import find_run
from .flags import positive, set_threads, store_flag


def _trained_sparse(args):
    model, masks, arch = trained_sparse(find_run(args.run, args.store), args.level, args.arm)
    return model, masks, arch["input_shape"], arch["num_classes"], arch


def cmd_export(args) -> int:
    positive(args, "threads")
    if args.threads < 1:
        raise JackpotError("--threads must be positive for export (it measures each layer at that count)")
    if Path(args.output).is_dir() or not Path(args.output).name:
        raise JackpotError(f"-o {args.output!r} must be a file path, e.g. model.pt")
    if Path(args.output).exists() and not args.force:
        raise JackpotError(f"-o {args.output}: the file exists; pass --force to replace it")
    device = resolve_device(args.device)
    model, masks, shape, classes, arch = _trained_sparse(args)
    # the exporter bakes, measures and builds each layer's form on the model's device
    exported = export_model(model.to(device), masks, args.batch_size, threads=args.threads, arch=arch)
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
    positive(args, "rounds")
    if args.threads < 1:
        raise JackpotError(f"--threads must be positive, got {args.threads}")
    if args.run and (args.model or args.density is not None):
        raise JackpotError("give either a RUN or --model/--density, not both")
    if args.density is not None:
        check_fraction(args.density, "--density")
    device = resolve_device(args.device)
    if args.run:
        model, masks, shape, classes, _ = _trained_sparse(args)
    elif args.model and args.density is not None:
        model, masks, arch = random_sparse(args.model, args.density, args.budget)
        shape, classes = arch["input_shape"], arch["num_classes"]
    else:
        raise JackpotError("give a RUN, or --model NAME and --density D")
    result = benchmark(model.to(device), masks, shape, args.batch_size, args.threads, args.rounds, classes)
    print(json.dumps(result, indent=1) if args.json else format_benchmark(result))
    return 0


def cmd_inspect(args) -> int:
    set_threads(args)
    shape, classes = None, None
    if args.dataset:
        ds = load_dataset(args.dataset, root=args.data_root, image_size=args.image_size)
        shape, classes = ds.input_shape, ds.num_classes
    check_fraction(args.density, "--density")
    info = inspect_budget(args.model, args.budget, args.density, shape, classes, args.keep_first,
                          args.keep_output, split_list(args.keep_layers), args.include_bias, args.flops)
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


_DEVICE_HELP = "device to build and time the sparse layers on: cpu, cuda or cuda:N (default: cpu)"


def register(sub) -> None:
    exp = sub.add_parser("export", help="turn a trained sparse network into a compact, fast inference model")
    exp.add_argument("run")
    exp.add_argument("-o", "--output", required=True, help="output file (.pt)")
    exp.add_argument("--level", type=int, default=None, help="lottery level (default: the last)")
    exp.add_argument("--arm", default="ticket", help="lottery arm (ticket, reinit, random)")
    exp.add_argument("--batch-size", type=int, default=1, help="batch size to optimise the layer formats for")
    exp.add_argument("--threads", type=int, default=1)
    exp.add_argument("--force", action="store_true", help="replace the output file when it exists")
    exp.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    store_flag(exp)
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
    ben.add_argument("--device", default="cpu", help=_DEVICE_HELP)
    store_flag(ben)
    ben.set_defaults(func=cmd_bench)

    ins = sub.add_parser("inspect", help="per-layer densities (and FLOPs) of a budget on a model")
    ins.add_argument("--model", default=RunConfig().model.model,
                     help=f"model name (default: {RunConfig().model.model}, as for every command)")
    ins.add_argument("--budget", default="erk", help="uniform, uniform-first-dense, er, erk, smart-ratio, global")
    ins.add_argument("--density", type=float, required=True, help="fraction of prunable weights kept")
    ins.add_argument("--dataset", help="take the input shape and class count from this dataset")
    ins.add_argument("--data-root")
    ins.add_argument("--image-size", type=int, default=RunConfig().data.image_size,
                     help=f"folder datasets: the side images are cropped to (default: {RunConfig().data.image_size})")
    ins.add_argument("--keep-first", action="store_true")
    ins.add_argument("--keep-output", action="store_true")
    ins.add_argument("--keep-layers", default="")
    ins.add_argument("--include-bias", action="store_true")
    ins.add_argument("--flops", action="store_true", help="add inference FLOPs per layer")
    ins.add_argument("--json", action="store_true")
    ins.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    ins.set_defaults(func=cmd_inspect)
