"""Lottery runs end to end on a tiny npz dataset: determinism (5), run contents (8), monotone
masks (3), controls, rewinding, skipping and extending levels."""
import json

import torch

from dataclasses import replace

from jackpot.config import DataConfig, LotteryConfig, ModelConfig, PruneConfig, RunConfig, TrainConfig
from jackpot.procedures.lottery import run_lottery
from jackpot.sparse import Masks


def tiny_config(npz, levels=2, **lottery):
    return RunConfig(data=DataConfig(dataset=f"npz:{npz}", batch_size=40),
                     model=ModelConfig(model="lenet-300-100"),
                     train=TrainConfig(lr=2e-3, duration="3ep"),
                     prune=PruneConfig(fraction=0.5, output_fraction=0.25),
                     lottery=LotteryConfig(levels=levels, **lottery))


def quiet(_):
    pass


def final(run, level, arm):
    return torch.load(run.path / f"level_{level:02d}" / arm / "final.pt", weights_only=True)


def test_same_config_gives_bit_identical_results(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz)
    a = run_lottery(cfg, root=tmp_path / "a", progress=quiet)
    b = run_lottery(cfg, root=tmp_path / "b", progress=quiet)
    for level, arm in [(0, "ticket"), (2, "ticket"), (2, "reinit"), (2, "random")]:
        wa, wb = final(a, level, arm), final(b, level, arm)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a.path / "level_02/ticket/metrics.jsonl").read_text().count("\n") > 0


def test_run_directory_holds_config_code_version_environment_and_results(tiny_npz, tmp_path):
    run = run_lottery(tiny_config(tiny_npz, levels=1), root=tmp_path, progress=quiet)
    record = json.loads((run.path / "config.json").read_text())
    assert record["hash"] == run.hash and record["config"]["model"]["model"] == "lenet-300-100"
    env = json.loads((run.path / "env.json").read_text())["history"][0]
    assert env["code"]["jackpot"] and env["environment"]["torch"] == torch.__version__
    for arm in ("ticket", "reinit", "random"):
        stage = run.path / "level_01" / arm
        for name in ("metrics.jsonl", "final.pt", "mask.pt", "done.json"):
            assert (stage / name).exists(), stage / name
        assert not (stage / "checkpoint.pt").exists()
    lines = [json.loads(l) for l in (run.path / "level_01/ticket/metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [0, 6, 12, 18]  # 240 examples / batch 40 = 6 steps per epoch


def test_masks_are_monotone_and_pruned_weights_zero(tiny_npz, tmp_path):
    run = run_lottery(tiny_config(tiny_npz, levels=3), root=tmp_path, progress=quiet)
    masks = [Masks.load(run.path / f"level_{l:02d}" / "mask.pt") for l in (1, 2, 3)]
    assert masks[1].is_subset_of(masks[0]) and masks[2].is_subset_of(masks[1])
    # fraction 0.5 per level, output layer (fc3) at 0.25
    assert masks[2].layer_counts()["fc1.weight"] == 20 * 300 // 8
    assert masks[0].layer_counts()["fc3.weight"] == 300  # 100 x 4 classes, 25% pruned
    w = final(run, 3, "ticket")
    assert (w["fc1.weight"][~masks[2]["fc1.weight"]] == 0).all()


def test_controls_keep_counts_and_differ_from_the_ticket(tiny_npz, tmp_path):
    run = run_lottery(tiny_config(tiny_npz, levels=1), root=tmp_path, progress=quiet)
    ticket = Masks.load(run.path / "level_01/ticket/mask.pt")
    random = Masks.load(run.path / "level_01/random/mask.pt")
    reinit = Masks.load(run.path / "level_01/reinit/mask.pt")
    assert random.layer_counts() == ticket.layer_counts()
    assert not torch.equal(random["fc1.weight"], ticket["fc1.weight"])
    assert all(torch.equal(reinit[n], ticket[n]) for n in ticket)
    init = torch.load(run.path / "init.pt", weights_only=True)
    ticket_start = torch.load(run.path / "rewind.pt", weights_only=True) if (run.path / "rewind.pt").exists() else init
    reinit_final, ticket_final = final(run, 1, "reinit"), final(run, 1, "ticket")
    assert not torch.equal(reinit_final["fc1.weight"], ticket_final["fc1.weight"])
    assert torch.equal(ticket_start["fc1.weight"], init["fc1.weight"])


def test_rewind_to_step_k_resumes_schedule_and_data_order(tiny_npz, tmp_path):
    run = run_lottery(tiny_config(tiny_npz, levels=1, rewind="1ep2it"), root=tmp_path, progress=quiet)
    assert (run.path / "rewind.pt").exists()
    lines = [json.loads(l) for l in (run.path / "level_01/ticket/metrics.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 8 and lines[-1]["step"] == 18
    init = torch.load(run.path / "init.pt", weights_only=True)
    rewound = torch.load(run.path / "rewind.pt", weights_only=True)
    assert not torch.equal(init["fc1.weight"], rewound["fc1.weight"])


def test_rerun_skips_finished_stages_and_more_levels_extend(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, levels=1)
    run = run_lottery(cfg, root=tmp_path, progress=quiet)
    done = run.path / "level_01/ticket/done.json"
    stamp = done.stat().st_mtime_ns
    printed = []
    run_lottery(cfg, root=tmp_path, progress=printed.append)
    assert done.stat().st_mtime_ns == stamp
    assert not any("test acc" in line for line in printed)  # nothing trained again
    longer = run_lottery(tiny_config(tiny_npz, levels=2), root=tmp_path, progress=printed.append)
    assert longer.path == run.path and done.stat().st_mtime_ns == stamp
    assert (run.path / "level_02/ticket/done.json").exists()
    assert sum("level 2/2" in line for line in printed) == 3


def test_retraining_modes(tiny_npz, tmp_path):
    """lr-rewind and finetune start from the trained weights; finetune trains at the final LR."""
    def cfg(retrain, **train):
        return RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                         train=TrainConfig(lr=2e-3, duration="3ep", **train), prune=PruneConfig(fraction=0.5),
                         lottery=LotteryConfig(levels=1, controls="", retrain=retrain))
    lines = lambda run: [json.loads(l) for l in (run.path / "level_01/ticket/metrics.jsonl").read_text().splitlines()]
    rewind = run_lottery(cfg("rewind"), root=tmp_path, progress=quiet)
    lr_rewind = run_lottery(cfg("lr-rewind"), root=tmp_path, progress=quiet)
    # lr-rewind starts from the pruned *trained* weights: far lower loss than the rewound init
    assert lines(lr_rewind)[0]["test_loss"] < 0.5 * lines(rewind)[0]["test_loss"]
    cosine = run_lottery(cfg("finetune", schedule="cosine"), root=tmp_path, progress=quiet)
    ft = lines(cosine)
    assert {l["lr"] for l in ft[1:]} == {ft[-1]["lr"]} and ft[-1]["lr"] < 2e-3 * 0.01
    replay = run_lottery(cfg("lr-rewind", schedule="cosine"), root=tmp_path, progress=quiet)
    assert lines(replay)[1]["lr"] > lines(replay)[-1]["lr"]  # the schedule is replayed


def test_global_pruning_by_init_normalized_magnitude(tiny_npz, tmp_path):
    base = RunConfig(data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40), model=ModelConfig(model="lenet-300-100"),
                     train=TrainConfig(duration="1ep"), lottery=LotteryConfig(levels=1, controls=""))
    plain = run_lottery(replace(base, prune=PruneConfig(fraction=0.8, scope="global")), root=tmp_path, progress=quiet)
    norm = run_lottery(replace(base, prune=PruneConfig(fraction=0.8, scope="global", score="magnitude-init-normalized")),
                       root=tmp_path, progress=quiet)
    a, b = Masks.load(plain.path / "level_01/mask.pt"), Masks.load(norm.path / "level_01/mask.pt")
    assert a.count() == b.count()
    # fc1 (fan-in 20) has the largest init scale: plain magnitude keeps it densest, normalising evens it out
    da, db = (m.layer_counts()["fc1.weight"] / m["fc1.weight"].numel() for m in (a, b))
    assert da > db
