"""`jackpot report`: tables (CSV, Markdown), figures (PNG, PDF), the HTML page, from a store with
sparse, pai and lottery runs and from a sweep record."""
import csv

import pytest

from jackpot.analysis.report import styles
from jackpot.cli import main

TINY = ["--duration", "2ep", "--batch-size", "60"]


@pytest.fixture(scope="module")
def filled_store(tmp_path_factory):
    from conftest import write_tiny_npz
    root = tmp_path_factory.mktemp("report")
    npz = write_tiny_npz(root / "tiny.npz")
    store = root / "store"
    data = ["--dataset", f"npz:{npz}", "--model", "lenet-300-100", *TINY, "--store", str(store), "--workers", "2"]
    assert main(["sweep", "sparse", *data, "--delta-t", "2", "--grid", "method=dense,rigl,set",
                 "--grid", "density=0.05,0.2", "--grid", "seed=0,1"]) == 0
    assert main(["sweep", "pai", *data, "--grid", "score=snip,random", "--grid", "density=0.1", "--seeds", "0,1"]) == 0
    assert main(["sweep", "lottery", *data, "--levels", "2", "--fraction", "0.5", "--seeds", "0,1"]) == 0
    return store


def test_report_of_a_store_writes_tables_figures_and_html(filled_store, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(filled_store), "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    methods = {r["method"] for r in rows}
    assert {"dense", "rigl (erk)", "set (erk)", "snip/global", "random/global", "IMP ticket", "IMP reinit",
            "IMP random"} <= methods, methods
    rigl = [r for r in rows if r["method"] == "rigl (erk)"]
    assert {r["target_density"] for r in rigl} == {"0.05", "0.2"} and all(r["n"] == "2" for r in rigl)
    assert all(r["final_mean"] and r["final_std"] and r["best_mean"] for r in rows)
    assert float(rigl[0]["train_flops"]) < 1
    assert [r["n"] for r in rows if r["method"] == "dense"] == ["2"]  # one dense run per seed
    md = (out / "results.md").read_text()
    assert "| rigl (erk) | 0.2 |" in md and "± " in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    for kind in ("accuracy_vs_weights", "accuracy_vs_flops", "layer_density", "training_curves"):
        assert any(p.startswith(kind) for p in pngs), pngs
    for png in out.glob("*.png"):
        assert png.stat().st_size > 20_000, png  # a real figure, not an empty canvas
        assert png.with_suffix(".pdf").stat().st_size > 5_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    assert all(f'src="{p}"' in page for p in pngs) and "<table>" in page and "http" not in page


def test_report_of_a_sweep_record_covers_only_its_runs(filled_store, tmp_path):
    record = next(p for p in (filled_store / "sweeps").glob("pai-*.json"))
    out = tmp_path / "pai"
    assert main(["report", str(record), "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["method"] for r in rows} == {"snip/global", "random/global"}
    assert main(["report", str(record.with_suffix("")), "-o", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "results.csv").read_text() == (out / "results.csv").read_text()


def test_method_styles_are_fixed_and_distinct():
    a = styles(["set (erk)", "rigl (erk)", "dense", "static (erk)"])
    b = styles(["static (erk)", "dense", "rigl (erk)", "set (erk)"])
    assert a == b and len(set(a.values())) == 4 and a["dense"][0] == "#000000"


def test_report_bad_input_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "out")]) == 2
    assert "no such store directory or sweep record" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_tensorboard_export_or_clear_error(filled_store, tmp_path, capsys):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        assert main(["report", str(filled_store), "-o", str(tmp_path / "out"),
                     "--tensorboard", str(tmp_path / "tb")]) == 2
        assert "pip install 'jackpot[tb]'" in capsys.readouterr().err
        return
    assert main(["report", str(filled_store), "-o", str(tmp_path / "out"), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
