"""What the tables, listings and figures say: DST mask-update history kept and plotted, diverged
runs counted but never averaged in (and standard JSON on disk), single-seed cells, readable log
axes, the lottery legend, one method label everywhere, and small CLI/README defects."""
import json
import math
import re
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from jackpot.cli import main

TINY = ["--batch-size", "60", "--duration", "2ep", "--threads", "1", "--device", "cpu"]


def cli(capsys, *argv):
    status = main(list(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity, which are not JSON."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """One store: rigl at two densities and dense (2 seeds each), static with 2 ordinary seeds and
    one run whose SGD at lr 1e6 diverges, lottery runs likewise."""
    from conftest import write_tiny_npz
    from jackpot.store import list_runs
    root = tmp_path_factory.mktemp("reporting")
    npz = write_tiny_npz(root / "tiny.npz")
    store = str(root / "store")
    data = ["--dataset", f"npz:{npz}", "--model", "lenet-300-100", *TINY, "--store", store]
    before = set()
    groups = {}

    def run(name, *argv):
        assert main([*argv, *data]) == 0
        nonlocal before
        now = {r.path for r in list_runs(store)}
        groups[name] = sorted(now - before)
        before = now

    run("rigl", "sparse", "--method", "rigl", "--density", "0.2", "--delta-t", "2", "--seeds", "0,1")
    run("rigl05", "sparse", "--method", "rigl", "--density", "0.05", "--delta-t", "2", "--seeds", "0,1")
    run("dense", "sparse", "--method", "dense", "--seeds", "0,1")
    run("static", "sparse", "--method", "static", "--density", "0.2", "--optimizer", "sgd", "--lr", "0.05",
        "--seeds", "0,1")
    run("static_diverged", "sparse", "--method", "static", "--density", "0.2", "--optimizer", "sgd",
        "--lr", "1e6", "--seed", "2")
    lot = ["lottery", "--fraction", "0.5", "--levels", "1", "--optimizer", "sgd"]
    run("lottery", *lot, "--lr", "0.05", "--seeds", "0,1")
    run("lottery_diverged", *lot, "--lr", "1e6", "--seed", "2")
    return Path(store), groups


# --- 11.6: the DST mask-update history ------------------------------------------------------------

def test_ever_active_fraction_is_the_union_of_the_masks_over_time():
    from jackpot.models import create_model
    from jackpot.sparse import Masks, Sparsifier, keep_count, prunable_names
    from jackpot.sparse.dst import UpdateSchedule, make_method
    torch.manual_seed(0)
    model = create_model("lenet-300-100", input_shape=(20,), num_classes=5)
    masks = Masks({n: torch.zeros_like(m) for n, m in Masks.ones_for(model, prunable_names(model)).items()})
    for m in masks.values():
        m.view(-1)[torch.randperm(m.numel())[:keep_count(0.1, m.numel())]] = True
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    sparsifier = Sparsifier(model, masks).attach(optimizer)
    method = make_method("set", UpdateSchedule(delta_t=3, alpha=0.5, t_end=20), seed=1)
    union = {n: m.clone() for n, m in sparsifier.masks.items()}
    expected = []
    g = torch.Generator().manual_seed(0)
    for step in range(20):
        x, y = torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        updated = method.schedule.is_update(step)
        if not method.after_backward(step, model, sparsifier):
            optimizer.step()
        if updated:
            for n, m in sparsifier.masks.items():
                union[n] |= m
            expected.append(sum(int(u.sum()) for u in union.values()) / sum(u.numel() for u in union.values()))
    history = method.summary()["mask_updates"]
    assert [u["step"] for u in history] == [3, 6, 9, 12, 15, 18]
    assert [u["ever_active"] for u in history] == pytest.approx(expected, abs=1e-12)
    assert expected[-1] > expected[0] > 0.1  # SET explores: the union grows past the density
    # the union survives a checkpoint round trip (a resumed run keeps counting from it)
    again = make_method("set", method.schedule, seed=1)
    again.load_state_dict(method.state_dict())
    assert all(torch.equal(again.ever_active[n], method.ever_active[n]) for n in union)


def test_mask_updates_are_kept_with_the_run_and_plotted(filled, tmp_path, monkeypatch):
    from jackpot.analysis import render, report
    from jackpot.sparse import Masks
    store, groups = filled
    run = groups["rigl"][0]
    done = strict_json((run / "train" / "done.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    assert not (run / "train" / "checkpoint.pt").exists()  # the history did not live only there
    updates = done["mask_updates"]
    total = done["end"]
    t_end = int(cfg["config"]["sparse"]["t_end"] * total)
    assert [u["step"] for u in updates] == [t for t in range(1, min(total, t_end)) if t % 2 == 0]
    assert all(u["dropped"] == u["grown_new"] + u["regrown"] for u in updates)  # rigl keeps counts
    assert all(0 < u["drop_fraction"] <= 0.3 for u in updates)
    seen = [u["ever_active"] for u in updates]
    assert seen == sorted(seen) and seen[0] >= done["density"]
    first, last = Masks.load(run / "mask_init.pt"), Masks.load(run / "train" / "mask.pt")
    both = sum(int((first[n] | last[n]).sum()) for n in first) / sum(m.numel() for m in first.values())
    assert seen[-1] >= both - 1e-12  # every position of the initial and final masks was active
    # static runs make no update: an empty history and no figure line
    assert strict_json((groups["static"][0] / "train" / "done.json").read_text())["mask_updates"] == []

    figures = {}
    monkeypatch.setattr(render, "_save", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    report.write_report(store, tmp_path / "report")
    fig = next(f for stem, f in figures.items() if stem.startswith("mask_updates"))
    drop_ax, seen_ax = fig.axes[:2]
    lines = {line.get_label(): line for line in seen_ax.get_lines()}
    assert set(lines) == {"rigl (erk) 20% (n=2)", "rigl (erk) 5% (n=2)"}
    histories = [strict_json((r / "train" / "done.json").read_text())["mask_updates"] for r in groups["rigl"]]
    mean_seen = [100 * statistics.fmean(h[i]["ever_active"] for h in histories) for i in range(len(updates))]
    assert list(lines["rigl (erk) 20% (n=2)"].get_ydata()) == pytest.approx(mean_seen)
    drop = {line.get_label(): line for line in drop_ax.get_lines()}["rigl (erk) 20% (n=2)"]
    assert list(drop.get_ydata()) == pytest.approx([100 * u["drop_fraction"] for u in updates])


def test_mask_update_history_of_a_killed_and_resumed_run_is_the_uninterrupted_one(tiny_npz, tmp_path,
                                                                                monkeypatch):
    import jackpot.train.loop as loop
    from jackpot.config import DataConfig, ModelConfig, RunConfig, SparseConfig, TrainConfig
    from jackpot.procedures import run
    cfg = RunConfig(kind="sparse", data=DataConfig(dataset=f"npz:{tiny_npz}", batch_size=40),
                    model=ModelConfig(model="lenet-300-100"), train=TrainConfig(lr=2e-3, duration="4ep"),
                    sparse=SparseConfig(method="set", density=0.2, delta_t=4))
    clean = run(cfg, root=tmp_path / "clean", progress=lambda _: None)
    real, calls = loop.F.cross_entropy, [0]

    def dying(*a, **kw):
        calls[0] += 1
        if calls[0] == 15:  # in epoch 3, after the checkpoints of epochs 1 and 2 (and 3 updates)
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(loop.F, "cross_entropy", dying)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, root=tmp_path / "killed", progress=lambda _: None)
    monkeypatch.setattr(loop.F, "cross_entropy", real)
    resumed = run(cfg, root=tmp_path / "killed", progress=lambda _: None)
    history = [strict_json((r.path / "train" / "done.json").read_text())["mask_updates"] for r in (clean, resumed)]
    assert history[0] == history[1] and len(history[0]) == 4  # steps 4, 8, 12, 16 (t_end = 18)
    assert history[0][-1]["ever_active"] > history[0][0]["ever_active"]


def test_report_writes_the_mask_update_figure(filled, tmp_path):
    store, _ = filled
    assert main(["report", str(store), "-o", str(tmp_path / "out")]) == 0
    png = next((tmp_path / "out").glob("mask_updates_*.png"))
    assert png.stat().st_size > 20_000 and png.with_suffix(".pdf").exists()
    assert f'src="{png.name}"' in (tmp_path / "out" / "index.html").read_text()


# --- 11.7: SLURM launcher without SLURM -------------------------------------------------------------

def test_slurm_launcher_without_sbatch_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")  # the optional extra; its absence has its own test
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch anywhere
    store = tmp_path / "store"
    status, out, err = cli(capsys, "sweep", "sparse", "--duration", "2ep", "--batch-size", "200", "--delta-t", "10",
                           "--grid", "density=0.1,0.5",
                           "--launcher", "slurm", "--workers", "2", "--store", str(store))
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("jackpot: error: --launcher slurm: no SLURM")
    assert "--slurm-cluster local" in err
    assert not store.exists()  # refused before anything is written


# --- 11.8: legend and log axes ---------------------------------------------------------------------

def test_lottery_plot_legend_has_only_the_arms_that_were_trained(filled):
    from jackpot.analysis.lottery_report import aggregate, figure
    from jackpot.store import Run
    _, groups = filled
    fig = figure(aggregate([Run(p) for p in groups["lottery"]]))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["winning ticket (IMP)", "random reinit", "random mask"]  # no "ticket, clean data"


def _labelled_ticks(axis, lim):
    """(text, position) of the labelled major ticks of a drawn axis that lie inside its view."""
    lo, hi = sorted(lim)
    return [(t.label1.get_text(), t.get_loc()) for t in axis.get_major_ticks()
            if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]


def test_log_axes_of_the_report_figures_have_enough_labels(filled, tmp_path, monkeypatch):
    from jackpot.analysis import render, report
    store, _ = filled
    figures = {}
    monkeypatch.setattr(render, "_save", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    report.write_report(store, tmp_path / "report")
    flops = next(f for s, f in figures.items() if s.startswith("accuracy_vs_flops"))
    ax = flops.axes[0]
    flops.canvas.draw()
    labels = _labelled_ticks(ax.xaxis, ax.get_xlim())
    assert len(labels) >= 4, labels
    assert all(float(text) == pytest.approx(v) for text, v in labels)  # each label names its position
    for line in ax.get_lines():  # and every point is inside the view
        assert all(min(ax.get_xlim()) <= x <= max(ax.get_xlim()) for x in line.get_xdata())
    layers = next(f for s, f in figures.items() if s.startswith("layer_density"))
    layers.canvas.draw()
    for ax in (a for a in layers.axes if a.get_visible()):
        labels = _labelled_ticks(ax.yaxis, ax.get_ylim())
        assert len(labels) >= 4, labels
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert min(ax.get_ylim()) <= min(ys) and max(ys) <= max(ax.get_ylim())
    weights = next(f for s, f in figures.items() if s.startswith("accuracy_vs_weights"))
    weights.canvas.draw()
    ax = weights.axes[0]
    assert len(_labelled_ticks(ax.xaxis, ax.get_xlim())) >= 4 and ax.xaxis_inverted()


@pytest.mark.parametrize("values", [[0.112, 0.113], [0.11, 0.45], [55, 100], [5, 100], [1.0]])
def test_log_ticks_cover_narrow_and_wide_ranges(values):
    from jackpot.analysis.axes import log_ticks
    ticks = log_ticks(values)
    assert len(ticks) >= 4 and ticks == sorted(ticks)
    assert ticks[0] <= min(values) * 1.05 or ticks[-1] >= max(values) / 1.05


# --- issue 10: diverged runs are never averaged in ---------------------------------------------------

def test_diverged_stage_is_standard_json_and_says_so(filled):
    _, groups = filled
    bad = groups["static_diverged"][0] / "train"
    done = strict_json((bad / "done.json").read_text())
    assert done["diverged"] is True and done["final"]["train_loss"] is None
    for line in (bad / "metrics.jsonl").read_text().splitlines():
        strict_json(line)
    good = strict_json((groups["static"][0] / "train" / "done.json").read_text())
    assert good["diverged"] is False and math.isfinite(good["final"]["train_loss"])
    for level in sorted(groups["lottery_diverged"][0].glob("level_*/*/done.json")):
        assert strict_json(level.read_text())["diverged"] is True


def test_summary_table_counts_diverged_runs_without_averaging_them(filled):
    from jackpot.analysis.summary import format_summary_table
    from jackpot.store import Run
    _, groups = filled
    runs = [Run(p) for p in groups["static"] + groups["static_diverged"]]
    table = format_summary_table(runs, "static (erk)")
    accs = [json.loads((p / "summary.json").read_text())["final"]["test_acc"] for p in groups["static"]]
    mean, std = 100 * statistics.fmean(accs), 100 * statistics.stdev(accs)
    assert f"| {mean:.1f} ± {std:.1f} | 2 of 3, 1 diverged |" in table
    assert "sample standard deviation" in table
    only_bad = format_summary_table([runs[-1]], "static (erk)")
    assert "| diverged | 0 of 1, 1 diverged |" in only_bad


def test_lottery_table_counts_diverged_runs_without_averaging_them(filled):
    from jackpot.analysis.lottery_report import aggregate, format_table
    from jackpot.store import Run
    _, groups = filled
    runs = [Run(p) for p in groups["lottery"] + groups["lottery_diverged"]]
    table = format_table(aggregate(runs))
    accs = [json.loads((p / "level_01" / "reinit" / "done.json").read_text())["final"]["test_acc"]
            for p in groups["lottery"]]
    cell = f"{100 * statistics.fmean(accs):.1f} ± {100 * statistics.stdev(accs):.1f} (n=2 of 3, 1 diverged)"
    assert cell in table.splitlines()[3]  # level 1, reinit column
    assert "diverged (n=0 of 1)" in format_table(aggregate([runs[-1]]))


def test_report_counts_diverged_runs_without_averaging_them(filled):
    from jackpot.analysis.report import aggregate, collect, format_markdown
    from jackpot.store import Run
    _, groups = filled
    points = collect([Run(p) for p in groups["static"] + groups["static_diverged"]])
    assert sorted(p["diverged"] for p in points) == [False, False, True]
    for p in points:  # the three differ only in lr (which labels them apart): one group here
        p["method"] = "static (erk)"
    (row,) = aggregate(points)
    accs = [p["final_acc"] for p in points if not p["diverged"]]
    assert (row["n"], row["diverged"]) == (2, 1) and row["final_mean"] == pytest.approx(statistics.fmean(accs))
    md = format_markdown([row])
    assert "| 2 of 3, 1 diverged |" in md and "sample standard deviation" in md


def test_ls_shows_diverged_runs(filled, capsys):
    store, groups = filled
    status, out, _ = cli(capsys, "ls", "--store", str(store))
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows[groups["static_diverged"][0].name].endswith("  diverged")
    assert rows[groups["static"][0].name].endswith("  done")
    assert rows[groups["lottery_diverged"][0].name].endswith("diverged (4 of 4 stages)")
    assert rows[groups["lottery"][0].name].endswith("  done")


# --- 11.18: single-seed cells, labels, show, inspect, README ------------------------------------------

def test_single_seed_tables_print_the_value_alone(filled):
    from jackpot.analysis.lottery_report import aggregate, format_table
    from jackpot.analysis.summary import format_summary_table
    from jackpot.store import Run
    _, groups = filled
    run = groups["static"][0]
    acc = json.loads((run / "summary.json").read_text())["final"]["test_acc"]
    table = format_summary_table([Run(run)], "static (erk)")
    assert f"| {100 * acc:.1f} | 1 |" in table and "±" not in table
    lottery = format_table(aggregate([Run(groups["lottery"][0])]))
    assert "(n=1)" in lottery and "±" not in lottery


def test_show_and_ls_label_a_run_as_the_sparse_command_does(filled, capsys):
    store, groups = filled
    run = groups["rigl"][0]
    status, out, _ = cli(capsys, "show", run.name, "--store", str(store))
    assert status == 0 and "| rigl (erk) |" in out
    _, out, _ = cli(capsys, "ls", "--store", str(store))
    assert "rigl (erk)" in next(line for line in out.splitlines() if line.startswith(run.name))


@pytest.mark.parametrize("ref", ["", "  "])
def test_show_refuses_an_empty_run_reference(filled, tmp_path, capsys, ref):
    import shutil
    _, groups = filled
    store = tmp_path / "one"  # '' is a prefix of every hash: with one run it used to pick that run
    shutil.copytree(groups["rigl"][0], store / groups["rigl"][0].name)
    status, out, err = cli(capsys, "show", ref, "--store", str(store))
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jackpot: error: give a run")


def test_inspect_defaults_the_model_and_takes_threads(capsys):
    status, out, _ = cli(capsys, "inspect", "--density", "0.1", "--threads", "1")
    assert status == 0 and "linear1" in out  # mnist1d-mlp, the default model of every command


def test_unknown_flag_is_one_line_without_a_doubled_prefix(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["inspect", "--model", "mnist1d-mlp", "--density", "0.1", "--no-such-flag"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("jackpot: error: unrecognized arguments: --no-such-flag")
    assert "jackpot: error: jackpot" not in err


def test_readme_layer_fractions_example_runs_on_the_default_model(tmp_path, capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = re.findall(r"--layer-fractions ([\w.=,]+)", readme)
    status, _, err = cli(capsys, "lottery", "--layer-fractions", example, "--duration", "5it", "--levels", "1",
                         "--threads", "1", "--device", "cpu", "--store", str(tmp_path / "s"))
    assert status == 0, err


def test_every_stage_records_its_measured_cost_and_the_report_sets_it_beside_flops(tiny_npz, tmp_path):
    """done.json's cost: the median step time (timed steps = steps trained), the bytes of the
    parameters and of Adam's state (two moments per parameter plus its step counter, counted here
    from the model itself); the report's measured time ratio is per dense run of the setting."""
    from jackpot.analysis import report
    from jackpot.models import create_model
    store = tmp_path / "store"
    base = ["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
            "--duration", "2ep", "--threads", "1", "--device", "cpu", "--store", str(store)]
    for method in ("dense", "static"):
        assert main(base + ["--method", method, "--density", "0.1"]) == 0
    model = create_model("lenet-300-100", (20,), 4)
    param_bytes = sum(4 * p.numel() for p in model.parameters())
    for run in store.glob("sparse-*"):
        cost = json.loads((run / "train" / "done.json").read_text())["cost"]
        assert cost["steps_timed"] == 12 and cost["step_seconds_median"] > 0  # 240 / 40 x 2 epochs
        assert cost["param_bytes"] == param_bytes
        assert cost["optimizer_bytes"] == 2 * param_bytes + 4 * len(list(model.parameters()))
        assert cost["device"] == "cpu" and cost["threads"] == 1
    out = report.write_report(store, tmp_path / "report")
    md = (out / "cost.md").read_text()
    assert "measured time per step (x baseline)" in md and "time per step" not in (out / "results.md").read_text()
    dense_row = next(line for line in md.splitlines() if line.startswith("| dense"))
    assert dense_row.split("|")[5].strip() == "1.0000"  # the dense run against itself
    assert dense_row.split("|")[6].strip() == "the dense run"
    static_row = next(line for line in md.splitlines() if line.startswith("| static"))
    static = next(p for p in store.glob("sparse-*") if "static" in (p / "config.json").read_text())
    dense = next(p for p in store.glob("sparse-*") if p != static)
    seconds = [json.loads((p / "train" / "done.json").read_text())["cost"]["step_seconds_median"] for p in (static, dense)]
    assert float(static_row.split("|")[5]) == pytest.approx(seconds[0] / seconds[1], abs=1e-4)
    import csv
    with open(out / "cost.csv") as f:  # the CSV names the unit its cells are in
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert "step_seconds" not in rows["dense"]
    assert float(rows["dense"]["step_ms"]) == pytest.approx(1000 * seconds[1], abs=1e-3)
    assert "What training cost" in (out / "index.html").read_text()
    assert (out / "speedup_npz-tiny-npz---lenet-300-100.png").exists()


def test_a_sparse_execution_run_is_compared_with_its_own_masked_reference(tiny_npz, tmp_path):
    from jackpot.analysis import report
    store = tmp_path / "store"
    assert main(["sparse", "--dataset", f"npz:{tiny_npz}", "--model", "lenet-300-100", "--batch-size", "40",
                 "--duration", "2ep", "--threads", "1", "--device", "cpu", "--store", str(store),
                 "--method", "static", "--density", "0.1", "--execution", "sparse"]) == 0
    (run,) = store.glob("sparse-*")
    cost = json.loads((run / "train" / "done.json").read_text())["cost"]
    assert cost["reference_step_seconds"] > 0 and "masked dense" in cost["reference"]
    out = report.write_report(store, tmp_path / "report")
    row = next(line for line in (out / "cost.md").read_text().splitlines() if line.startswith("| static"))
    ratio = float(row.split("|")[5])
    assert row.split("|")[6].strip() == "its masked reference"
    assert ratio == pytest.approx(cost["step_seconds_median"] / cost["reference_step_seconds"], abs=1e-4)
