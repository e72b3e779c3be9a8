"""Grid expansion for `jackpot sweep`: `--grid FIELD=v1,v2` over any config field.

A field is addressed as `group.field` (`sparse.method`, `pai.density`, `train.lr`), as the
top-level `seed`, or by its bare name when exactly one of the command's groups has it
(`method` in a sparse sweep; `density` resolves to `sparse.density` there and to `pai.density`
in a pai sweep). Values are comma-separated; a field whose values themselves hold commas
(`train.milestones`, `lottery.controls`) separates them with `;` instead.
Every problem (unknown field, empty value, bad value) is one JackpotError, raised before any run
is created.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from ..config import GROUPS, RunConfig, canonical, derive_seed, kind_spec, run_hash, scalar_type, validate
from ..data import load_configured
from ..errors import JackpotError
from ..models import create_model
from ..procedures import finished_state, procedure
from ..procedures.context import RunContext
from ..store import Run, check_threads


def resolve_field(name: str, kind: str) -> tuple[str | None, dataclasses.Field | None]:
    """(group, field) of a grid address; (None, None) for the top-level seed."""
    name = name.strip().replace("-", "_")
    groups = kind_spec(kind).groups
    if name == "seed":
        return None, None
    if "." in name:
        group, _, fname = name.partition(".")
        if group not in GROUPS:
            raise JackpotError(f"--grid: unknown field {name!r} (no config group {group!r}; groups: "
                               f"{', '.join(groups)})")
        if group not in groups:
            raise JackpotError(f"--grid: field {name!r} does not apply to `jackpot sweep {kind}` "
                               f"(its groups: {', '.join(groups)})")
        f = {f.name: f for f in dataclasses.fields(GROUPS[group])}.get(fname)
        if f is None:
            raise JackpotError(f"--grid: unknown field {name!r}; {group} has "
                               f"{', '.join(f.name for f in dataclasses.fields(GROUPS[group]))}")
        return group, f
    hits = [(g, f) for g in groups for f in dataclasses.fields(GROUPS[g]) if f.name == name]
    if not hits:
        raise JackpotError(f"--grid: unknown field {name!r} for `jackpot sweep {kind}` "
                           f"(write group.field, e.g. train.lr; groups: {', '.join(groups)})")
    if len(hits) > 1:
        raise JackpotError(f"--grid: field {name!r} is ambiguous: "
                           f"{' or '.join(g + '.' + f.name for g, f in hits)}")
    return hits[0]


def _convert(text: str, f: dataclasses.Field | None, address: str) -> Any:
    value_type, optional = scalar_type("int" if f is None else f.type)  # f None: the seed
    if optional and text.lower() == "none":
        return None
    try:
        if value_type is bool:
            low = text.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError
        value = value_type(text)
    except ValueError:
        raise JackpotError(f"--grid {address}: bad value {text!r} (expected {value_type.__name__})") from None
    choices = f.metadata.get("choices") if f is not None else None
    if choices and value not in choices:
        raise JackpotError(f"--grid {address}: bad value {text!r}; choose {', '.join(choices)}")
    return value


def parse_grid(specs: list[str], kind: str) -> dict[str, list]:
    """['sparse.method=rigl,set', 'seed=0,1'] -> {'sparse.method': ['rigl', 'set'], 'seed': [0, 1]}."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not name.strip():
            raise JackpotError(f"--grid {spec!r}: write FIELD=v1,v2,... (e.g. sparse.method=rigl,set)")
        group, f = resolve_field(name, kind)
        address = "seed" if group is None else f"{group}.{f.name}"
        if address in grid:
            raise JackpotError(f"--grid: field {address} given twice")
        items = [v.strip() for v in values.split(";" if ";" in values else ",")]
        if not values.strip() or any(not v for v in items):
            raise JackpotError(f"--grid {spec!r}: empty value in the list for {address}")
        converted = [_convert(v, f, address) for v in items]
        if len(set(map(repr, converted))) != len(converted):
            raise JackpotError(f"--grid {spec!r}: a value of {address} is listed twice")
        grid[address] = converted
    return grid


def with_value(cfg: RunConfig, address: str, value: Any) -> RunConfig:
    if address == "seed":
        return dataclasses.replace(cfg, seed=value)
    group, _, fname = address.partition(".")
    return dataclasses.replace(cfg, **{group: dataclasses.replace(getattr(cfg, group), **{fname: value})})


def expand(base: RunConfig, grid: dict[str, list]) -> list[tuple[RunConfig, dict]]:
    """Every combination, validated: [(config, {address: value})] in grid order (last field fastest).
    Dense sparse-training baselines collapse to one run per seed (they ignore the sparse settings),
    and so do points that differ only in settings their run does not read (config.READ_WHEN)."""
    out, seen = [], {}
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        cfg = base
        for k, v in values.items():
            cfg = with_value(cfg, k, v)
        try:
            validate(cfg)
        except JackpotError as e:
            where = ", ".join(f"{k}={v}" for k, v in values.items())
            raise JackpotError(f"{e} (grid point {where})" if where else str(e)) from None
        h = run_hash(cfg)
        if h in seen and canonical(cfg, unread=True) != seen[h][1]:
            continue  # differs only in a setting this run does not read (static's --delta-t): one run
        if h in seen:
            raise JackpotError(f"--grid points {seen[h][0]} and {values} give the same run "
                               f"(a field that does not change what is computed?)")
        seen[h] = (values, canonical(cfg, unread=True))
        out.append((cfg, values))
    return out


def preflight(cfgs: list[RunConfig], labels: list[dict] | None = None, root=None, threads: int | None = None) -> None:
    """Load each distinct dataset and build each model once: a bad name or a model/data mismatch
    is one line before any run directory exists. Then every run's own checks (the procedure's,
    as its command makes them), and for a run in store `root` begun but unfinished, that the
    sweep's `threads` are the count it was begun with: no launched run fails on something its
    config or its record already says."""
    shapes, datasets = {}, {}
    for i, cfg in enumerate(cfgs):
        d = cfg.data
        # the data exactly as the run loads it (a pai check may score on it): the split seed
        # matters only when a validation split is carved out
        split_seed = derive_seed(cfg.seed, "validation-split") if d.val_size else 0
        key = (d.dataset, d.data_root, d.val_size, split_seed, d.standardize, d.image_size)
        if key not in shapes:
            datasets[key] = ds = load_configured(d, split_seed)
            shapes[key] = (ds.input_shape, ds.num_classes)
        if (key, cfg.model.model) not in shapes:
            try:
                create_model(cfg.model.model, *shapes[key])
            except JackpotError:
                raise
            except Exception as e:
                raise JackpotError(f"model {cfg.model.model!r} does not fit dataset {d.dataset!r}: {e}") from None
            shapes[(key, cfg.model.model)] = True
        try:
            RunContext.prepare(cfg, root=root, dataset=datasets[key], check=procedure(cfg.kind).check)
            path = Run.path_for(cfg, root)
            if threads and (path / "config.json").exists() and finished_state(path, cfg) is None:
                check_threads(path, threads)
        except JackpotError as e:
            where = ", ".join(f"{k}={v}" for k, v in (labels[i] if labels else {}).items())
            raise JackpotError(f"{e} (grid point {where})" if where else str(e)) from None
