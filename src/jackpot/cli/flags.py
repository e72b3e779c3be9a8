"""The flags every command shares, generated from the config dataclasses, and the small checks
on flag values. Any JackpotError a command raises becomes one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import dataclasses
import re

import torch

from ..config import GROUPS, RunConfig, scalar_type, split_list
from ..errors import JackpotError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one `jackpot: error:` line (and exit 2), like every other
    bad input; `--help` still prints the full usage."""

    def error(self, message: str):
        where = "" if self.prog == "jackpot" else f"{self.prog}: "  # a subcommand names itself, once
        self.exit(2, f"jackpot: error: {where}{message} (see {self.prog} --help)\n")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_ADDRESS = re.compile(r"`(" + "|".join(GROUPS) + r")\.([a-z_]+)`")


def in_flags(message: str) -> str:
    """A library message with its config parameters (written `sparse.delta_t`, in backquotes)
    named as the flags that set them (--delta-t): the engine names parameters, the command line
    speaks flags. Unquoted addresses (a config file's settings, a grid point) stay as written."""
    def named(m: re.Match) -> str:
        fields = {f.name for f in dataclasses.fields(GROUPS[m.group(1)])}
        return flag(m.group(2)) if m.group(2) in fields else m.group(0)
    return _ADDRESS.sub(named, message)


PARENT_DEFAULT = "the parent run's"  # a branch's flags before its parent run is known


def add_config_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...],
                     defaults: RunConfig | None = RunConfig()) -> None:
    """One flag per field of the named config groups (--lr, --fraction...), stored as group.field.
    `defaults`: the RunConfig whose values the flags default to (a branch takes its parent's), or
    None when it is not known yet (the help then says the parent run's)."""
    seed = 0 if defaults is None else defaults.seed
    parser.add_argument("--seed", type=int, default=seed, help="seed of every random act of the run "
                        f"(default: {PARENT_DEFAULT if defaults is None else seed})")
    parser.set_defaults(_groups=groups)
    for group_name in groups:
        group = parser.add_argument_group(group_name)
        for f in dataclasses.fields(GROUPS[group_name]):
            dest = f"{group_name}.{f.name}"
            default = f.default if defaults is None else getattr(getattr(defaults, group_name), f.name)
            shown = PARENT_DEFAULT if defaults is None else default
            help_text = f"{f.metadata['help']} (default: {shown})"
            if f.type == "bool":
                group.add_argument(flag(f.name), dest=dest, action=argparse.BooleanOptionalAction,
                                   default=default, help=help_text)
            else:
                group.add_argument(flag(f.name), dest=dest, type=scalar_type(f.type)[0], default=default,
                                   choices=f.metadata.get("choices"), help=help_text, metavar=f.name.upper())


def groups_from_args(args: argparse.Namespace, groups) -> dict:
    """{group: its config dataclass} built from the parsed group.field flags."""
    return {g: GROUPS[g](**{f.name: getattr(args, f"{g}.{f.name}") for f in dataclasses.fields(GROUPS[g])})
            for g in groups}


def config_from_args(args: argparse.Namespace, kind: str, seed: int | None = None) -> RunConfig:
    return RunConfig(kind=kind, seed=args.seed if seed is None else seed, **groups_from_args(args, args._groups))


def seeds(text: str | None, default: int) -> list[int]:
    if text is None:
        return [default]
    try:
        out = [int(s) for s in split_list(text)]
    except ValueError:
        out = []
    if not out:
        raise JackpotError(f"--seeds takes comma-separated integers, got {text!r}")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:  # one run counted twice in the table would bias its mean and spread
        raise JackpotError(f"--seeds {text}: seed {', '.join(map(str, repeated))} is listed twice")
    return out


def positive(args, *names: str) -> None:
    """--threads, --workers, --rounds... must be positive when given (0 = torch's default threads)."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < (0 if name == "threads" else 1):
            raise JackpotError(f"--{name} must be {'>= 0' if name == 'threads' else 'positive'}, got {value}")


def set_threads(args) -> None:
    """--threads N (0: torch's own choice), checked first."""
    positive(args, "threads")
    if args.threads:
        torch.set_num_threads(args.threads)


def store_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="experiment store directory (default: $JACKPOT_STORE or ./runs)")


def wait_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="when another process is computing the same run, "
                                                       "wait for it and then finish, instead of refusing")


def quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output (results are still printed)")


def device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA when available)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")


def recipe_flag(p: argparse.ArgumentParser, also: str = "flags") -> None:
    p.add_argument("--recipe", help=f"published settings by name (see `jackpot recipes`); {also} given "
                                    "on the command line still win")
