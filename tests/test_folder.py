"""Issue 15: `folder:` datasets (ImageNet layout) stream from JPEG files: they train, resume
bit-identically after a kill, decode the same pixels in every process, and hold nothing decoded."""
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jackpot.cli import main
from jackpot.data import load_dataset
from jackpot.data.folder import crop_box


def write_tree(root: Path, per_class: int, size=(20, 24), classes=("blue", "red"), val=6, seed=0) -> Path:
    """JPEGs whose colour tells the class apart (red vs blue, noisy), in train/ and val/."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 90, size=(size[1], size[0], 3), dtype=np.uint8)
                img[..., 2 if c == 0 else 0] += 150
                Image.fromarray(img).save(d / f"{i:05d}.jpeg", quality=90)
    return root


ARGS = ["sparse", "--method", "static", "--density", "0.3", "--model", "lenet-300-100", "--image-size", "16",
        "--batch-size", "10", "--threads", "1", "--device", "cpu"]


def test_a_folder_dataset_trains_and_is_described(tmp_path):
    root = write_tree(tmp_path / "imgs", per_class=20)
    ds = load_dataset(f"folder:{root}", image_size=16)
    assert ds.input_shape == (3, 16, 16) and ds.num_classes == 2 and ds.num_train == 40 and ds.num_test == 12
    assert ds.classes == ("blue", "red") and ds.y_train.tolist() == [0] * 20 + [1] * 20
    store = tmp_path / "store"
    assert main([*ARGS, "--dataset", f"folder:{root}", "--duration", "4ep", "--store", str(store)]) == 0
    (run,) = store.glob("sparse-*")
    done = json.loads((run / "train" / "done.json").read_text())
    assert done["final"]["test_acc"] >= 0.9  # colour is easy: it learned from the streamed pixels
    # the same crops as a hand-seeded decode: example j of step s draws from derive_seed(order, "augment", s, j)
    x, _ = ds.train_batch([0, 1], [7, 7])
    assert torch.equal(x[0], ds.train_batch([0], [7])[0][0]) and not torch.equal(x[0], ds.train_batch([0], [8])[0][0])


def test_random_resized_crop_boxes_follow_their_definition():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, right, bottom = crop_box(64, 48, g)
        w, h = right - left, bottom - top
        assert 0 <= left < right <= 64 and 0 <= top < bottom <= 48
        assert 0.08 * 64 * 48 * 0.8 <= w * h  # area at least 8% (rounding aside), at most all
        assert w / h <= 4 / 3 * 1.15 or (w, h) == (48, 48)  # aspect ratio within 3/4..4/3, or the fallback


def test_a_killed_folder_run_resumes_bit_identically(tmp_path, capsys, monkeypatch, interrupt_at):
    root = write_tree(tmp_path / "imgs", per_class=20)
    argv = [*ARGS, "--dataset", f"folder:{root}", "--duration", "2ep", "--checkpoint-every", "3it",
            "--loader-workers", "2"]
    assert main([*argv, "--store", str(tmp_path / "clean")]) == 0
    interrupt_at(5)
    assert main([*argv, "--store", str(tmp_path / "killed")]) == 130
    monkeypatch.undo()
    assert main([*argv, "--store", str(tmp_path / "killed"), "--loader-workers", "0"]) == 0  # not hashed
    (a,), (b,) = (tmp_path / "clean").glob("sparse-*"), (tmp_path / "killed").glob("sparse-*")
    wa, wb = (torch.load(p / "train" / "final.pt", weights_only=True) for p in (a, b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (a / "train" / "metrics.jsonl").read_text() == (b / "train" / "metrics.jsonl").read_text()


def _peak_rss_kib(root: Path, store: Path) -> int:
    code = ("import resource, sys; from jackpot.cli import main; "
            f"status = main({[*ARGS, '--image-size', '64', '--dataset', f'folder:{root}', '--duration', '25it', '--batch-size', '20', '--loader-workers', '0', '--store', str(store)]!r}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_stays_flat_in_the_number_of_images(tmp_path):
    small = write_tree(tmp_path / "small", per_class=100, size=(72, 72), val=20)
    large = write_tree(tmp_path / "large", per_class=1000, size=(72, 72), val=20)
    rss_small = _peak_rss_kib(small, tmp_path / "s1")
    rss_large = _peak_rss_kib(large, tmp_path / "s2")
    held = 1800 * 3 * 64 * 64 * 4 / 1024  # KiB the 1,800 extra images would take decoded as float32
    assert rss_large - rss_small < 0.25 * held, (rss_small, rss_large, held)


def test_an_unreadable_image_or_an_empty_class_is_refused_before_any_run_directory(tmp_path, capsys):
    root = write_tree(tmp_path / "imgs", per_class=8)
    (root / "train" / "blue" / "00003.jpeg").write_text("not an image")
    store = tmp_path / "store"
    status = main([*ARGS, "--dataset", f"folder:{root}", "--duration", "1ep", "--store", str(store)])
    err = capsys.readouterr().err
    assert status == 2 and "cannot decode image" in err and "00003.jpeg" in err and not store.exists(), err
    (root / "train" / "blue" / "00003.jpeg").unlink()
    (root / "train" / "fox").mkdir()  # a class folder with no image
    status = main([*ARGS, "--dataset", f"folder:{root}", "--duration", "1ep", "--store", str(store)])
    err = capsys.readouterr().err
    assert status == 2 and "train/fox/ holds no images" in err and not store.exists(), err


def test_an_image_that_does_not_decode_in_a_worker_is_one_line(tmp_path, capsys, monkeypatch):
    from jackpot.data import folder
    monkeypatch.setattr(folder, "HEADER_CHECK_MAX", 0)  # as in a folder too large to check up front
    root = write_tree(tmp_path / "imgs", per_class=8)
    (root / "train" / "blue" / "00000.jpeg").write_text("not an image")
    status = main([*ARGS, "--dataset", f"folder:{root}", "--duration", "1ep", "--loader-workers", "2",
                   "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "cannot decode image" in err and "00000.jpeg" in err, err
