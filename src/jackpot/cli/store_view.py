"""The commands that read the store: `jackpot ls`, `show` and `compare`."""
from __future__ import annotations

import json

from ..analysis.lottery_report import aggregate, format_table, level_results
from ..analysis.similarity import format_similarity, mask_similarity, resolve_mask
from ..analysis.summary import format_summary_table, method_label, run_diverged, run_summary
from ..config import canonical
from ..errors import JackpotError
from ..procedures import finished_state, procedure
from ..procedures.branches import branch_summary
from ..store import find_run, list_runs, store_root
from .flags import store_flag


def run_line(run) -> tuple[str, str, str]:
    """(what, weights remaining, status) of a run, whatever its procedure."""
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
        what, low, status = run_line(run)
        print(f"{run.path.name:<22} {cfg.data.dataset[:14]:<14} {cfg.model.model:<14} {cfg.seed:>4}  "
              f"{what:<22} {low:>8}  {status}")
    return 0


def cmd_show(args) -> int:
    run = find_run(args.run, args.store)
    cfg = run.config()
    levels = procedure(cfg.kind).levels
    branches = _branches(run)
    if args.json:
        body = level_results(run) if levels else run_summary(run)
        print(json.dumps({"run": str(run.path), "config": canonical(cfg), "results": body, "branches": branches},
                         indent=2))
        return 0
    print(f"run {run.path}")
    print("settings: " + json.dumps(canonical(cfg), sort_keys=True))
    print()
    if levels:
        print(format_table(aggregate([run])))
    else:
        print(format_summary_table([run], run_line(run)[0]))
    if branches:
        print("\nbranches (under " + str(run.path / "branches") + "):")
        for b in branches:
            result = (f"{100 * b['density']:.1f}% weights  test acc {100 * b['final_test_acc']:.1f}%"
                      if b["done"] else "partial")
            print(f"  {b['name']:<32} {result}")
    return 0


def _branches(run) -> list[dict]:
    """The run's branches (reinit, shuffle, transfers...): name, and density and final test accuracy
    once finished."""
    out = []
    for record in sorted((run.path / "branches").glob("*/config.json")):
        entry = {"name": record.parent.name, "done": False}
        try:
            summary = branch_summary(record.parent)
            entry.update(done=True, density=summary["density"], final_test_acc=summary["final"]["test_acc"])
        except (JackpotError, KeyError, TypeError):  # unfinished or damaged: a re-run of it finishes it
            pass
        out.append(entry)
    return out


def cmd_compare(args) -> int:
    a, b = resolve_mask(args.a, args.store), resolve_mask(args.b, args.store)
    rows = mask_similarity(a, b)
    print(json.dumps(rows, indent=1) if args.json else format_similarity(rows, args.a, args.b))
    return 0


def register(sub) -> None:
    ls = sub.add_parser("ls", help="list runs in the store")
    store_flag(ls)
    ls.set_defaults(func=cmd_ls)

    show = sub.add_parser("show", help="a run's summary table")
    show.add_argument("run", help="run directory, name or hash prefix")
    show.add_argument("--json", action="store_true")
    store_flag(show)
    show.set_defaults(func=cmd_show)

    cmp_ = sub.add_parser("compare", help="per-layer Jaccard overlap of two masks")
    cmp_.add_argument("a", help="RUN[:LEVEL] (lottery level, default: last) or RUN (pai/sparse) or a mask .pt file")
    cmp_.add_argument("b")
    cmp_.add_argument("--json", action="store_true")
    store_flag(cmp_)
    cmp_.set_defaults(func=cmd_compare)
