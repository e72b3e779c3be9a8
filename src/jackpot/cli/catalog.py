"""The commands that list what jackpot offers: `jackpot models`, `datasets`, `recipes` and
`data fetch`."""
from __future__ import annotations

from ..data import fetch_dataset, list_datasets
from ..models import list_models
from ..recipes import format_recipe, format_recipe_list, get_recipe


def cmd_models(args) -> int:
    for info in list_models():
        shape = "x".join(map(str, info.default_input_shape))
        print(f"{info.name:<16} {shape:>10} {info.default_num_classes:>5} classes  {info.description}")
    return 0


def cmd_datasets(args) -> int:
    for name, description in list_datasets():
        print(f"{name:<16} {description}")
    return 0


def cmd_data_fetch(args) -> int:
    path = fetch_dataset(args.name, args.root)
    print(f"{args.name}: ready in {path}")
    return 0


def cmd_recipes(args) -> int:
    print(format_recipe(get_recipe(args.name)) if args.name else format_recipe_list())
    return 0


def register_recipes(sub) -> None:
    rec = sub.add_parser("recipes", help="published settings by name (use one with --recipe NAME)")
    rec.add_argument("name", nargs="?", help="a recipe: print its settings, source and expected numbers")
    rec.set_defaults(func=cmd_recipes)


def register(sub) -> None:
    sub.add_parser("models", help="list model names").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list dataset names").set_defaults(func=cmd_datasets)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download a dataset and verify its checksums")
    fetch.add_argument("name")
    fetch.add_argument("--root", default=None, help="directory to download into (default: $JACKPOT_DATA or ~/.jackpot/data)")
    fetch.set_defaults(func=cmd_data_fetch)
