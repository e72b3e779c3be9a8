"""Recipes: the published settings jackpot supports, by name (`jackpot recipes`, `--recipe NAME`).

A recipe only fills in flag defaults: flags given on the command line still win, and the run's
hash is that of the resolved settings, so a recipe and the same flags typed out are one run.
Each recipe cites where its settings come from and the numbers it should reach. Tags follow
../shared/reference: [text] read in the paper, [code] read in the reference code, [recall] from
memory of the paper, to be checked before it is used as a test target.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import GROUPS, kind_spec
from .errors import JackpotError
from .procedures import lottery, pai, sparse_training

# a recipe names the procedure it configures (the command it fills in)
LOTTERY, PAI, SPARSE = (m.PROCEDURE.kind for m in (lottery, pai, sparse_training))

_CIFAR_SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "schedule": "step", "gamma": 0.1}


def _cifar_global_imp(model: str, batch: int, duration: str, milestones: str, **extra) -> dict:
    """CIFAR-10, SGD 0.1 momentum 0.9 with step decay, weight decay 1e-4, global 20% per level."""
    return {**_CIFAR_SGD, "dataset": "cifar10", "model": model, "weight_decay": 1e-4, "batch_size": batch,
            "duration": duration, "milestones": milestones, "scope": "global", "fraction": 0.2, **extra}


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str                  # lottery, pai or sparse
    summary: str
    source: str                # where the settings come from
    expect: str                # the published numbers it should reach
    settings: dict = field(default_factory=dict)  # field name -> value (fields of the kind's groups)
    notes: str = ""            # differences jackpot cannot remove, data to bring

    def resolved(self) -> dict[str, object]:
        """'group.field' -> value, the form the command's flags are stored in."""
        return {f"{_group_of(self.kind, k)}.{k}": v for k, v in self.settings.items()}

    def flags(self) -> list[str]:
        """The same settings typed out as command-line flags."""
        out = []
        for key, value in self.settings.items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                out.append(flag if value else "--no-" + key.replace("_", "-"))
            else:
                out += [flag, str(value)]
        return out


def _group_of(kind: str, name: str) -> str:
    groups = [g for g in kind_spec(kind).groups if name in {f.name for f in dataclasses.fields(GROUPS[g])}]
    if len(groups) != 1:
        raise JackpotError(f"recipe setting {name!r} is not a {kind} setting")
    return groups[0]


def _su_random_ticket(model: str) -> dict:
    """Su et al.'s CIFAR-10 training (SGD 0.1, batch 64, 160 epochs) of a smart-ratio random ticket."""
    return {**_CIFAR_SGD, "dataset": "cifar10", "model": model, "weight_decay": 1e-4, "batch_size": 64,
            "duration": "160ep", "milestones": "80ep,120ep", "score": "random", "budget": "smart-ratio",
            "density": 0.1}


_LTH_VGG19 = _cifar_global_imp("vgg-19", 64, "112000it", "56000it,84000it", keep_output=True, levels=20)


def _lth_conv(name: str, convs: list[str], conv_rate: float, lr: float, steps: int, result: str) -> Recipe:
    return Recipe(
        f"lth-{name}-cifar10", LOTTERY, f"LTH paper {name.capitalize()} on CIFAR-10 (Adam, layerwise)",
        "Frankle & Carbin, ICLR 2019, Fig. 2 / Sec. 3 [text]: Adam, batch 60, Gaussian Glorot init, "
        f"layerwise pruning, conv {conv_rate:.0%} and fc 20% per round, output layer at half the fc rate",
        result,
        {"dataset": "cifar10", "model": name, "init": "xavier-normal", "optimizer": "adam", "lr": lr,
         "batch_size": 60, "duration": f"{steps}it", "val_size": 5000, "fraction": 0.2,
         "output_fraction": 0.1, "layer_fractions": ",".join(f"{c}={conv_rate}" for c in convs),
         "levels": 20},
        "needs CIFAR-10 (`jackpot data fetch cifar10`); a GPU run. jackpot's CIFAR loader adds "
        "random crop + flip, which the LTH paper's Conv nets did not use [recall].")


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe(
        "lth-lenet-mnist", LOTTERY, "LTH paper LeNet-300-100 on MNIST (Adam, layerwise 20/20/10%)",
        "Frankle & Carbin, ICLR 2019, Fig. 3 and Sec. 2 [text]: Adam 1.2e-3, batch 60, 50K iterations, "
        "Gaussian Glorot init, layerwise pruning 20% per round, output layer 10%",
        "dense just over 98% (reproduction 97.8%); IMP above dense at 51.3% and 21.1% of the weights, "
        "back to about dense at 3.6%; random reinit below dense from 26.3% (pai.md 3a)",
        {"dataset": "mnist", "model": "lenet-300-100", "init": "xavier-normal", "optimizer": "adam",
         "lr": 1.2e-3, "batch_size": 60, "duration": "50000it", "val_size": 5000, "fraction": 0.2,
         "output_fraction": 0.1, "levels": 20},
        "needs MNIST (`jackpot data fetch mnist`, or ../shared/tools/full-mnist offline). The official "
        "TF code used SGD 0.1 instead (google-research/lottery-ticket-hypothesis#15)."),
    _lth_conv("conv-2", ["features.0", "features.2"], 0.1, 2e-4, 20000,
              "IMP beats dense by up to 3.4 points, best near 4.6% of the weights; above dense while "
              "more than 2% remain (pai.md 3b [recall])"),
    _lth_conv("conv-4", ["features.0", "features.2", "features.5", "features.7"], 0.1, 3e-4, 25000,
              "IMP beats dense by up to 3.5 points, best near 11.1% of the weights (pai.md 3b [recall])"),
    _lth_conv("conv-6", ["features.0", "features.2", "features.5", "features.7", "features.10",
                         "features.12"], 0.15, 3e-4, 30000,
              "IMP beats dense by up to 3.3 points, best near 26.4% of the weights (pai.md 3b [recall])"),
    Recipe(
        "lth-resnet20-cifar10", LOTTERY, "LTH paper ResNet-20 on CIFAR-10 (SGD with warm-up, global)",
        "Frankle & Carbin, ICLR 2019, Sec. 4 [recall]: SGD 0.1 momentum 0.9, batch 128, 30K iterations, "
        "x0.1 at 20K and 25K, 10K warm-up iterations, weight decay 1e-4; global pruning of the convs at "
        "20% per round, the fc layer kept",
        "winning tickets at lr 0.1 only with warm-up; matching dense down to about 10% of the weights "
        "[recall]",
        _cifar_global_imp("resnet-20", 128, "30000it", "20000it,25000it", warmup="10000it", keep_output=True,
                          levels=20),
        "needs CIFAR-10; a GPU run."),
    Recipe(
        "lth-vgg19-cifar10", LOTTERY, "LTH paper VGG-19 on CIFAR-10 (SGD with warm-up, global)",
        "Frankle & Carbin, ICLR 2019, Sec. 4 [recall]: SGD 0.1 momentum 0.9, batch 64, 112K iterations, "
        "x0.1 at 56K and 84K, 10K warm-up iterations, weight decay 1e-4; global 20% of the convs per "
        "round, the fc layer kept",
        "tickets matching dense down to a few % of the weights at lr 0.1 only with warm-up [recall]",
        {**_LTH_VGG19, "warmup": "10000it"},
        "needs CIFAR-10; a GPU run. jackpot's VGG-19 is OpenLTH's (BatchNorm, one Linear head)."),
    Recipe(
        "lth-vgg19-cifar10-late-reset", LOTTERY, "VGG-19 with late resetting instead of warm-up",
        "Frankle, Dziugaite, Roy & Carbin 2019, 'Stabilizing the LTH' [recall]: as lth-vgg19-cifar10 "
        "without warm-up, survivors reset to iteration 500 with the LR schedule and data order resumed "
        "there",
        "late resetting finds matching tickets where resetting to iteration 0 does not [recall]",
        {**_LTH_VGG19, "rewind": "500it"},
        "needs CIFAR-10; a GPU run."),
    Recipe(
        "openlth-lenet-300-100", LOTTERY, "OpenLTH's mnist_lenet_300_100 defaults",
        "facebookresearch/open_lth models/mnist_lenet.py default_hparams [code]: SGD lr 0.1, no "
        "momentum, batch 128, 40 epochs, kaiming_normal init, sparse_global pruning per level (k = "
        "ceil(20%) of the remaining weights, fc included, then the k + 1 smallest of the others), "
        "fc.weight ignored",
        "OpenLTH run here on the 4000/1000 MNIST digits, 5 epochs per level (openlth.md 3.3): dense "
        "91.8%, then 92.3 / 92.2 / 92.2% at 80.0 / 64.0 / 51.2% of the weights",
        {"dataset": "mnist", "model": "lenet-300-100", "init": "kaiming-normal", "optimizer": "sgd", "lr": 0.1,
         "batch_size": 128, "duration": "40ep", "scope": "global", "fraction": 0.2, "rounding": "openlth",
         "keep_output": True, "levels": 3},
        "OpenLTH normalises MNIST with the fixed mean/std (0.1307, 0.3081); jackpot with the training "
        "split's own statistics. OpenLTH's batchnorm_init (uniform) does nothing on this BatchNorm-free "
        "net, so it is left out. The parity check uses --dataset npz:mnist5k.npz --duration 5ep."),
    Recipe(
        "openlth-resnet-20", LOTTERY, "OpenLTH's cifar_resnet_20 defaults",
        "facebookresearch/open_lth models/cifar_resnet.py default_hparams [code]: SGD 0.1 momentum 0.9, "
        "weight decay 1e-4, batch 128, 160 epochs, x0.1 at 80 and 120 epochs, kaiming_normal, "
        "BatchNorm uniform, sparse_global 20% per level, output layer pruned too",
        "about 91.7% dense on CIFAR-10 [recall]",
        _cifar_global_imp("resnet-20", 128, "160ep", "80ep,120ep", init="kaiming-normal", bn_init="uniform",
                          rounding="openlth", levels=10),
        "needs CIFAR-10; a GPU run."),
    Recipe(
        "openlth-vgg-19", LOTTERY, "OpenLTH's cifar_vgg defaults on VGG-19",
        "facebookresearch/open_lth models/cifar_vgg.py default_hparams [code]: as openlth-resnet-20, "
        "with fc.weight ignored by pruning",
        "about 93.5% dense on CIFAR-10 [recall]",
        _cifar_global_imp("vgg-19", 128, "160ep", "80ep,120ep", init="kaiming-normal", bn_init="uniform",
                          rounding="openlth", keep_output=True, levels=10),
        "needs CIFAR-10; a GPU run."),
    Recipe(
        "rigl-wrn-22-2-cifar10", SPARSE, "RigL on CIFAR-10 WRN-22-2 (ERK, 80% sparse)",
        "Evci et al., ICML 2020, Sec. 4.2 and google-research/rigl#8 [text]: 250 epochs (97,656 steps) "
        "at batch 128, SGD 0.1 momentum 0.9 divided by 5 every 30K steps, weight decay 5e-4, ERK, "
        "dT = 100, alpha 0.3 cosine, mask updates end at 75K steps",
        "RigL (ERK) 94.2 / 93.6 / 92.9 / 91.8% at 50 / 80 / 90 / 95% sparsity; dense 94.1% (dst.md 3)",
        {**_CIFAR_SGD, "gamma": 0.2, "dataset": "cifar10", "model": "wrn-22-2", "weight_decay": 5e-4,
         "batch_size": 128, "duration": "97656it", "milestones": "30000it,60000it,90000it", "method": "rigl",
         "distribution": "erk", "density": 0.2, "delta_t": 100, "alpha": 0.3, "drop_schedule": "cosine",
         "t_end": 0.76801},
        "needs CIFAR-10; a GPU run. --density sets the other sparsities. 97,656 steps is the paper's "
        "count (250 epochs of 390.6 steps); t_end 0.76801 puts the last update before step 75,000."),
    Recipe(
        "rigl-resnet50-imagenet", SPARSE, "RigL on ImageNet ResNet-50 (ERK, 80% sparse)",
        "Evci et al., ICML 2020, Fig. 2 table [text]: batch 4096, 32K steps, SGD momentum 0.9, lr 1.6 "
        "with a 5-epoch warm-up, x0.1 at epochs 30, 70, 90, weight decay 1e-4, dT = 100, alpha 0.3 cosine, "
        "updates end at 25K steps",
        "RigL (ERK) 75.1 +- 0.05 top-1 at 80% (train/test FLOPs 0.42x), 73.0 at 90%; dense 76.8 (dst.md 3)",
        {**_CIFAR_SGD, "model": "resnet-50", "weight_decay": 1e-4, "batch_size": 4096, "lr": 1.6,
         "duration": "32000it", "warmup": "1563it", "milestones": "9375it,21875it,28125it",
         "method": "rigl", "distribution": "erk", "density": 0.2, "delta_t": 100, "alpha": 0.3,
         "drop_schedule": "cosine", "t_end": 0.78125},
        "Give the ImageNet folders as --dataset folder:PATH (PATH/train/<wnid>/*.JPEG, PATH/val/<wnid>/*.JPEG; "
        "streamed with random-resized crops to 224 and flips, --loader-workers decoding processes). Label "
        "smoothing 0.1 of the paper is not implemented. Epoch milestones are converted at 312.5 steps per epoch."),
    Recipe(
        "su-vgg19-cifar10", PAI, "Su et al. random tickets (smart ratio) on VGG-19, CIFAR-10",
        "Su et al., NeurIPS 2020, sanity-checking-pruning code [code]: SGD 0.1 momentum 0.9, weight decay "
        "1e-4, batch 64, 160 epochs, x0.1 at 80 and 120; smart-ratio per-layer keep ratios (VGG l^2 rule), "
        "random positions",
        "random tickets match SNIP (93.63 / 93.43 / 92.05%) and GraSP (93.30 / 93.04 / 92.19%) at 10 / 5 / "
        "2% of the weights; dense 94.23% (GraSP 2020 table, pai.md 3b [recall])",
        _su_random_ticket("vgg-19"),
        "needs CIFAR-10; a GPU run. --score snip / grasp gives the baselines of the same table."),
    Recipe(
        "su-resnet32-cifar10", PAI, "Su et al. random tickets (smart ratio) on ResNet-32, CIFAR-10",
        "Su et al., NeurIPS 2020, sanity-checking-pruning code [code]: as su-vgg19-cifar10 on ResNet-32 "
        "(their ResNet32 has widths 32/64/128, twice jackpot's He et al. resnet-32 at 16/32/64)",
        "random tickets match SNIP (92.59 / 91.01 / 87.51%) and GraSP (92.38 / 91.39 / 88.81%) at 10 / 5 / "
        "2% of the weights; dense 94.80% (GraSP 2020 table, pai.md 3b [recall])",
        _su_random_ticket("resnet-32"),
        "needs CIFAR-10; a GPU run. jackpot's resnet-32 is the 16/32/64 network (0.47M weights), not "
        "the 2x wider one of the paper's table, so expect lower numbers than those quoted."),
    Recipe(
        "mnist1d-notebook", LOTTERY, "The MNIST-1D lottery-ticket notebook (greydanus/mnist1d)",
        "greydanus/mnist1d notebooks/lottery-tickets.ipynb and train.py [code]: MLP 40-500-500(res)-10 "
        "with PyTorch's init, Adam 2e-2, batch 100 in the stored order (no shuffling), raw inputs, "
        "1501 steps; layerwise masks over each layer's weights and bias together, output layer pruned, "
        "int(p n) entries dropped, weights ranked by their magnitude at the step-1000 checkpoint; the "
        "random control draws a fresh mask every round on its own initialisation",
        "tickets at 9.1 / 8.1% of the weights 75.0, 72.4 / 75.6, 74.4%; random masks 62.3, 60.6 / 60.6, "
        "61.8%; dense 60.6-66.4% (notebook outputs, pai.md 3a)",
        {"dataset": "mnist1d", "model": "mnist1d-mlp", "optimizer": "adam", "lr": 0.02, "batch_size": 100,
         "duration": "1501it", "shuffle": False, "standardize": False, "include_bias": True,
         "scope": "layerwise-joint", "rounding": "floor-drop", "fraction": 0.2, "rank_at": "1001it",
         "controls": "random", "random_init": "own", "levels": 11},
        "The notebook prunes on a linear schedule over 100 rounds, sparsity i/99 at round i "
        "(--prune-schedule linear --fraction 0.010101010101 --levels 91 reaches its 8.1%); this recipe "
        "uses 20% per level (11 levels to 8.6%) to fit a CPU. The "
        "notebook's checkpoint at step 1000 holds the weights after 1001 updates, hence --rank-at 1001it."),
]}


def get_recipe(name: str, kind: str | None = None) -> Recipe:
    recipe = RECIPES.get(name)
    if recipe is None:
        raise JackpotError(f"unknown recipe {name!r}; see `jackpot recipes` ({', '.join(RECIPES)})")
    if kind is not None and recipe.kind != kind:
        raise JackpotError(f"recipe {name} is a `jackpot {recipe.kind}` recipe, not `jackpot {kind}`")
    return recipe


def format_recipe_list() -> str:
    width = max(len(n) for n in RECIPES)
    return "\n".join(f"{r.name:<{width}}  {r.kind:<7}  {r.summary}" for r in RECIPES.values())


def format_recipe(recipe: Recipe) -> str:
    return "\n".join([
        f"{recipe.name}: {recipe.summary}",
        f"command:  jackpot {recipe.kind} --recipe {recipe.name}   (same as: jackpot {recipe.kind} "
        + " ".join(recipe.flags()) + ")",
        f"source:   {recipe.source}",
        f"expect:   {recipe.expect}",
        *([f"notes:    {recipe.notes}"] if recipe.notes else []),
    ])
