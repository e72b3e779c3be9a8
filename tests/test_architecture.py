"""The shape of issue 13: a new procedure is one module plus one registration (its command, its
sweep subcommand, hashing, validation, `ls` and `show` follow from the registry), and the engine
names parameters while the command line names flags."""
import json
import time

import pytest

from jackpot import config as config_module
from jackpot.cli import main
from jackpot.cli.flags import in_flags
from jackpot.config import KindSpec, RunConfig, canonical, run_hash, validate
from jackpot.errors import JackpotError
from jackpot.procedures import registry
from jackpot.procedures.context import RunContext, report_stage
from jackpot.store import atomic_write_json
from jackpot.train import train_stage


def _run_toy(cfg, root=None, device="cpu", progress=print, dataset=None, wait=False):
    """A dense baseline written the way a new procedure would be: open, lock, train, summarise."""
    ctx = RunContext.open(cfg, root, device, progress, dataset, wait=wait)
    with ctx.lock():
        model = ctx.new_model(("init",))
        t0 = time.perf_counter()
        record = train_stage(ctx.stage("train", model, None, 0, ctx.total_steps, "toy"))
        report_stage(ctx, "toy", record, time.perf_counter() - t0)
        atomic_write_json(ctx.run.stage("summary.json"), {"density": 1.0, "final": record["final"],
                                                          "best": record["best"]})
    return ctx.run


def _refuse_big_batches(cfg):
    if cfg.data.batch_size > 64:
        raise JackpotError("toy runs take `data.batch_size` of at most 64")


@pytest.fixture
def toy(monkeypatch):
    """Register the toy procedure for one test (both registries restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(config_module, "_KINDS", dict(config_module._KINDS))
    return registry.register(registry.Procedure(
        kind="toy", config=KindSpec(groups=("data", "model", "train"), validate=_refuse_big_batches),
        help="a dense baseline (test)", description="test procedure", run=_run_toy,
        check=lambda ctx, model: None, stages=lambda cfg: ["train"],
        mask_path=lambda run, level=None: None, trained_stage=lambda run, level=None, arm="": run.stage("train"),
        label=lambda cfg: "toy", levels=False, target_density=lambda cfg: 1.0, family=lambda cfg: "toy"))


def test_a_registered_procedure_gets_a_command_a_sweep_hashing_and_listings(toy, tiny_npz, tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["toy", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--duration", "1ep",
            "--batch-size", "16", "--threads", "1", "--device", "cpu", "--store", str(store)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "table:" in out
    cfg = RunConfig(kind="toy")
    assert canonical(cfg) == {"kind": "toy"} and run_hash(cfg) != run_hash(RunConfig())
    # only the groups the kind reads enter its hash: a sparse setting does not split toy runs
    other = RunConfig(kind="toy", sparse=config_module.SparseConfig(density=0.5))
    assert run_hash(other) == run_hash(cfg)
    (run,) = [p for p in store.iterdir() if p.name.startswith("toy-")]
    assert json.loads((run / "config.json").read_text())["config"]["kind"] == "toy"
    assert main(["ls", "--store", str(store)]) == 0
    assert "done" in capsys.readouterr().out.splitlines()[1]
    assert main(["show", run.name, "--store", str(store)]) == 0
    assert "toy" in capsys.readouterr().out
    assert main(["sweep", "toy", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--duration", "1ep",
                 "--batch-size", "16", "--grid", "train.lr=0.1,0.2", "--dry-run", "--store", str(store)]) == 0
    assert "2 runs" in capsys.readouterr().out


def test_a_registered_procedure_validates_its_own_settings(toy, tiny_npz, tmp_path, capsys):
    with pytest.raises(JackpotError, match="at most 64"):
        validate(RunConfig(kind="toy", data=config_module.DataConfig(batch_size=100)))
    store = tmp_path / "store"
    status = main(["toy", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "100",
                   "--store", str(store)])
    err = capsys.readouterr().err
    # the engine's parameter name reaches the user as the flag that sets it
    assert status == 2 and err.strip() == "jackpot: error: toy runs take --batch-size of at most 64"
    assert not store.exists()


def test_unknown_kinds_are_one_clear_error():
    with pytest.raises(JackpotError, match="unknown procedure kind 'nope'"):
        run_hash(RunConfig(kind="nope"))


def test_parameter_names_become_flags_only_where_they_are_parameters():
    assert in_flags("`sparse.delta_t` must be positive") == "--delta-t must be positive"
    assert in_flags("`masks.keep_layers` names no module") == "--keep-layers names no module"
    # not parameters the engine names: files, unknown fields, a config file's or grid point's settings
    for text in ("cannot read `model.pt` or `train.nothing`", "bad value (grid point train.lr=0.1)",
                 "config.json: pai.density differs from the run's recorded settings"):
        assert in_flags(text) == text


def test_engine_errors_name_parameters_and_the_cli_names_flags(tiny_npz, tmp_path, capsys):
    from jackpot.models import create_model
    from jackpot.sparse import prunable_names
    with pytest.raises(JackpotError, match=r"^`masks\.keep_layers` names no module"):
        prunable_names(create_model("lenet-300-100", (20,), 4), keep_layers=["nope"])
    status = main(["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--keep-layers", "nope",
                   "--store", str(tmp_path / "s")])
    assert status == 2 and capsys.readouterr().err.startswith("jackpot: error: --keep-layers names no module")
