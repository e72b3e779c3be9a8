"""Reading results back: every finished result of a run becomes a *point* (one (run, arm, level)
for runs with pruning levels, one run otherwise), labelled by its procedure. Config fields that
differ between the reported runs of one method family (other than seed, density and the method
fields) are appended to the label (`rigl (erk) lr=0.1`)."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..config import canonical
from ..errors import JackpotError
from ..procedures import procedure
from ..sparse import Masks
from ..store import Run, list_runs, read_json, stage_done
from ..sweep_record import Sweep
from ..train.loop import read_metrics
from .summary import method_label, run_summary

SKIP_FIELDS = {"seed", "sparse.method", "sparse.distribution", "sparse.density", "pai.score", "pai.budget",
               "pai.density", "pai.invert", "data.dataset", "model.model", "kind"}


# --- collecting points ----------------------------------------------------------------------------

def resolve_source(source: str | Path) -> tuple[list[Run], str]:
    """(runs, title) of a store directory or a sweep record (file or directory)."""
    path = Path(source)
    record = None
    if path.suffix == ".json" and path.is_file():
        record = path
    elif path.is_dir() and path.with_suffix(".json").is_file() and path.parent.name == "sweeps":
        record = path.with_suffix(".json")
    if record is not None:
        sweep = Sweep.load(record)
        runs = [Run(p) for p in sweep.run_paths() if (p / "config.json").exists()]
        return runs, f"sweep {sweep.name}"
    if not path.is_dir():
        raise JackpotError(f"{source}: no such store directory or sweep record")
    runs = list_runs(path)
    if not runs:
        raise JackpotError(f"{source}: no runs there (give a store directory or <store>/sweeps/NAME.json)")
    return runs, f"store {path}"


def _flat(canon: dict) -> dict:
    out = {}
    for k, v in canon.items():
        if isinstance(v, dict):
            out.update({f"{k}.{f}": x for f, x in v.items()})
        else:
            out[k] = v
    return out


def _stage_point(done: Path, base: dict) -> dict:
    rec = read_json(done, "stage record")
    rows = read_metrics(done.parent / "metrics.jsonl")
    cost = rec.get("cost") or {}
    return {**base, "final_acc": rec["final"]["test_acc"], "best_acc": rec["best"].get("test_acc"),
            "step_seconds": cost.get("step_seconds_median"), "reference_step_seconds": cost.get("reference_step_seconds"),
            "best_epoch": rec["best"].get("epoch"), "diverged": bool(rec.get("diverged")),
            "curve": [(r["epoch"], r["test_acc"]) for r in rows if "test_acc" in r],
            "mask_updates": rec.get("mask_updates") or [], "stage": str(done.parent)}


def collect(runs: list[Run]) -> list[dict]:
    """One dict per finished result: setting, method, density, seed, accuracies, curve, layers."""
    infos = []
    for run in runs:
        try:
            cfg = run.config()
        except JackpotError:
            continue
        infos.append((run, cfg, _flat(canonical(cfg))))
    # a field that differs between runs of one method (an lr grid...) goes into its label
    groups = defaultdict(list)
    for run, cfg, flat in infos:
        groups[(cfg.kind, cfg.data.dataset, cfg.model.model, _base_method(cfg))].append(flat)
    varying = {}
    for key, flats in groups.items():
        keys = {k for flat in flats for k in flat} - SKIP_FIELDS
        varying[key] = sorted(k for k in keys if len({json.dumps(f.get(k)) for f in flats}) > 1)
    labels = _dataset_labels({cfg.data.dataset for _, cfg, _ in infos})
    points = []
    for run, cfg, flat in infos:
        suffix = "".join(f" {k.split('.')[-1]}={flat.get(k, 'default')}"
                         for k in varying[(cfg.kind, cfg.data.dataset, cfg.model.model, _base_method(cfg))])
        base = {"run": run.path.name, "kind": cfg.kind, "seed": cfg.seed,
                "setting": f"{labels[cfg.data.dataset]} / {cfg.model.model}"}
        if procedure(cfg.kind).levels:
            points += _lottery_points(run, cfg, base, suffix)
            continue
        done = run.stage("train", "done.json")
        summary = run_summary(run)  # None while unfinished, or when its stage or summary is damaged
        if summary is None:
            continue
        method = method_label(cfg)
        target = procedure(cfg.kind).target_density(cfg)
        point = _stage_point(done, {**base, "method": method + suffix, "target": target,
                                    "density": summary["density"], "layers": summary.get("layers") or []})
        if "train_flops_ratio" in summary:
            point["train_flops"] = summary["train_flops_ratio"]
            point["inference_flops"] = summary["inference_flops_ratio"]
        points.append(point)
    return points


def _dataset_labels(names: set[str]) -> dict[str, str]:
    """npz:PATH by its file name, short for tables and file names;
    the whole name where two datasets share that short one (they must never pool as one setting)."""
    def short(name):
        kind, sep, path = name.partition(":")
        return f"npz:{Path(path).name}" if sep and kind == "npz" else name
    shorts = [short(n) for n in names]
    return {n: short(n) if shorts.count(short(n)) == 1 else n for n in names}


def _base_method(cfg) -> str:
    return procedure(cfg.kind).family(cfg)


def _lottery_points(run: Run, cfg, base: dict, suffix: str) -> list[dict]:
    out = []
    for level_dir in sorted(run.path.glob("level_*")):
        level = int(level_dir.name.split("_")[1])
        layers = []
        if (level_dir / "mask.pt").exists():
            try:
                layers = Masks.load(level_dir / "mask.pt").report()
            except Exception:  # noqa: BLE001 - a corrupt mask only loses its figure
                layers = []
        for done in sorted(level_dir.glob("*/done.json")):
            if not stage_done(done.parent):  # its record or files damaged: a re-run recomputes it
                continue
            arm = done.parent.name
            rec_density = read_json(done, "stage record").get("density", 1.0)
            out.append(_stage_point(done, {**base, "method": f"IMP {arm}{suffix}", "level": level,
                                           "target": round(rec_density, 4), "density": rec_density,
                                           "layers": layers if arm == "ticket" else []}))
    return out
