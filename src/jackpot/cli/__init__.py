"""The `jackpot` command. Thin: parses flags (generated from the config dataclasses and the
procedure registry), calls the library, prints. Any JackpotError becomes one line on stderr and
exit status 2.

    flags.py       shared flags and flag checks          run.py      lottery/pai/sparse, branch, stability
    store_view.py  ls, show, compare                     export.py   export, bench, inspect
    sweep.py       sweep, report                         catalog.py  models, datasets, recipes, data fetch
"""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import JackpotError
from ..procedures import kinds
from ..recipes import get_recipe
from . import catalog, export, run, store_view, sweep
from .flags import Parser, add_config_flags, config_from_args, in_flags  # noqa: F401  (entry points)

# commands that compute stages into the store (the others only read it, or write a report)
COMPUTING_COMMANDS = (*kinds(), "sweep", "branch", "stability")


def recipe_name(argv: list[str]) -> str | None:
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
    run.register(sub, recipe)
    store_view.register(sub)
    export.register(sub)
    sweep.register(sub, recipe)
    catalog.register_recipes(sub)
    catalog.register(sub)
    return parser


def _recipe(argv: list[str]):
    """The recipe of a procedure command (or its sweep), checked before parsing."""
    name = recipe_name(argv)
    kind = argv[1] if argv[:1] == ["sweep"] and len(argv) > 1 else (argv[0] if argv else None)
    if name is None or kind not in kinds():
        return None
    recipe = get_recipe(name, kind)
    if "dataset" not in recipe.settings and not any(a == "--dataset" or a.startswith("--dataset=") for a in argv):
        raise JackpotError(f"recipe {recipe.name} names no dataset jackpot can read: give --dataset "
                           "(e.g. npz:PATH); see `jackpot recipes " + recipe.name + "`")
    return recipe


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["branch"]:
            return run.cmd_branch(argv[1:])
        args = build_parser(_recipe(argv)).parse_args(argv)
        return args.func(args)
    except JackpotError as e:
        print(f"jackpot: error: {in_flags(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("jackpot: interrupted; finished stages are kept, re-run the same command to resume",
              file=sys.stderr)
        return 130
    except Exception as e:  # a case no check foresaw: still one line (JACKPOT_DEBUG=1 shows the traceback)
        if os.environ.get("JACKPOT_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        kept = "finished stages are kept; " if argv[:1] and argv[0] in COMPUTING_COMMANDS else ""
        print(f"jackpot: error: {type(e).__name__}: {first} ({kept}JACKPOT_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
