import dataclasses

import pytest

from jackpot.config import (LotteryConfig, PruneConfig, RunConfig, TrainConfig, canonical, derive_seed,
                            from_dict, parse_step, run_hash, to_dict, validate)
from jackpot.errors import JackpotError

# Invariant 7: these hashes are pinned. If one changes, old run directories are orphaned: a new
# option must default to a no-op so that it does not enter the canonical form.
PINNED = {
    "default": (RunConfig(), "0184b2a18bea"),
    "sgd-global": (RunConfig(train=TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9),
                             prune=PruneConfig(scope="global")), "0e4078da0ad2"),
    "seed-3-rewind": (RunConfig(seed=3, lottery=LotteryConfig(rewind="1ep")), "39084bf6569f"),
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_pinned_hashes(key):
    cfg, expected = PINNED[key]
    assert run_hash(cfg) == expected


def test_canonical_lists_only_non_defaults():
    assert canonical(RunConfig()) == {"kind": "lottery"}
    cfg = RunConfig(train=TrainConfig(lr=0.5))
    assert canonical(cfg) == {"kind": "lottery", "train": {"lr": 0.5}}


def test_unhashed_fields_do_not_change_the_hash():
    base = RunConfig()
    more_levels = dataclasses.replace(base, lottery=dataclasses.replace(base.lottery, levels=20))
    other_root = dataclasses.replace(base, data=dataclasses.replace(base.data, data_root="/elsewhere"))
    assert run_hash(base) == run_hash(more_levels) == run_hash(other_root)
    assert run_hash(base) != run_hash(dataclasses.replace(base, seed=1))


def test_round_trip_through_dict():
    cfg = RunConfig(train=TrainConfig(optimizer="sgd", milestones="1ep,2ep"), seed=4)
    assert from_dict(to_dict(cfg)) == cfg
    assert run_hash(from_dict(to_dict(cfg))) == run_hash(cfg)


def test_derive_seed_is_stable_and_separates_acts():
    assert derive_seed(0, "init") == derive_seed(0, "init")
    seeds = {derive_seed(0, "init"), derive_seed(1, "init"), derive_seed(0, "reinit", 1),
             derive_seed(0, "reinit", 2), derive_seed(0, "data-order")}
    assert len(seeds) == 5
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_parse_step():
    assert parse_step("20ep", 40) == 800
    assert parse_step("500it", 40) == 500
    assert parse_step("2ep10it", 40) == 90
    for bad in ("", "ep", "10", "1.5ep", "3epochs"):
        with pytest.raises(JackpotError):
            parse_step(bad, 40)


@pytest.mark.parametrize("cfg, words", [
    (RunConfig(prune=PruneConfig(fraction=1.5)), "--fraction"),
    (RunConfig(prune=PruneConfig(fraction=-0.1)), "--fraction"),
    (RunConfig(prune=PruneConfig(output_fraction=1.0)), "--output-fraction"),
    (RunConfig(prune=PruneConfig(layer_fractions="fc1")), "name=value"),
    (RunConfig(train=TrainConfig(lr=0)), "--lr"),
    (RunConfig(train=TrainConfig(duration="ten")), "bad step"),
    (RunConfig(lottery=LotteryConfig(controls="reinit,bogus")), "bogus"),
])
def test_validate_refuses_with_a_named_problem(cfg, words):
    with pytest.raises(JackpotError, match=words):
        validate(cfg)


def test_branch_names_are_pinned_and_ignore_default_options():
    from pathlib import Path

    from jackpot.procedures.branches import BranchSpec, branch_dir
    from jackpot.store import Run
    parent = Run(Path("/store/lottery-x"))
    assert branch_dir(parent, BranchSpec("shuffle", level=2), RunConfig()).name == "shuffle-L2-846a4cc5299e"
    assert branch_dir(parent, BranchSpec("reinit", level=3, seed=1, rescale=True), RunConfig()).name == "reinit-L3-ff07730983dc"


def test_numbers_hash_by_value_not_by_python_type():
    from jackpot.config import SparseConfig
    assert run_hash(RunConfig(sparse=SparseConfig(extend=2))) == run_hash(RunConfig(sparse=SparseConfig(extend=2.0)))
    assert run_hash(RunConfig(train=TrainConfig(lr=1))) == run_hash(RunConfig(train=TrainConfig(lr=1.0)))
