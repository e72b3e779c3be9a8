"""Invariant 1 (exact counts) and 3 (monotone IMP masks), and the LTH pruning schedule."""
import pytest
import torch

from jackpot.errors import JackpotError
from jackpot.models import create_model
from jackpot.sparse import Masks, keep_count, prunable_names, prune, scores_magnitude
from jackpot.sparse import Sparsifier
from jackpot.sparse import masks as masks_mod
from jackpot.sparse.dst import UpdateSchedule, make_method
from jackpot.sparse.masks import flat_nonzero, pack_flags, top_k, top_k_indices, unpack_flags


def lenet_masks():
    model = create_model("lenet-300-100")
    return model, Masks.ones_for(model, prunable_names(model))


def test_keep_count_is_nearest_integer_halves_up():
    assert keep_count(0.8, 1000) == 800
    assert keep_count(0.5, 3) == 2          # 1.5 -> 2
    assert keep_count(0.25, 2) == 1         # 0.5 -> 1
    assert keep_count(0.0, 10) == 0 and keep_count(1.0, 10) == 10
    with pytest.raises(JackpotError):
        keep_count(1.2, 10)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_prune_keeps_exact_counts(scope):
    model, masks = lenet_masks()
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        scores = {n: torch.rand(m.shape, generator=g) for n, m in masks.items()}
        before = masks.layer_counts()
        new = prune(scores, masks, 0.3, scope)
        if scope == "layerwise":
            assert new.layer_counts() == {n: keep_count(0.7, c) for n, c in before.items()}
        else:
            assert new.count() == keep_count(0.7, sum(before.values()))
        assert new.is_subset_of(masks)
        masks = new


def test_prune_never_revives_pruned_weights_even_with_high_scores():
    _, masks = lenet_masks()
    first = prune({n: torch.rand(m.shape) for n, m in masks.items()}, masks, 0.5, "global")
    # Scores that favour exactly the pruned weights: they must still stay pruned.
    adversarial = {n: (~m).float() * 100 for n, m in first.items()}
    second = prune(adversarial, first, 0.2, "global")
    assert second.is_subset_of(first)
    assert second.count() == keep_count(0.8, first.count())


def test_ties_are_broken_by_position_deterministically():
    masks = Masks({"w": torch.ones(10, dtype=torch.bool)})
    kept = prune({"w": torch.ones(10)}, masks, 0.3)["w"]
    assert kept.tolist() == [True] * 7 + [False] * 3


def test_lenet_layerwise_20_20_10_schedule_matches_the_lth_paper():
    """Frankle & Carbin: weights remaining 51.3% after 3 rounds, 21.1% after 7, 3.6% after 15, 1.2% after 20."""
    model, masks = lenet_masks()
    expected = {3: 51.3, 7: 21.1, 15: 3.6, 20: 1.2}
    seen = {}
    for level in range(1, 21):
        masks = prune(scores_magnitude(model, masks), masks, 0.2, "layerwise", {"fc3": 0.1})
        seen[level] = round(100 * masks.density(), 1)
    assert {k: seen[k] for k in expected} == expected


def test_output_layer_override_prunes_at_its_own_rate_under_global_scope():
    model, masks = lenet_masks()
    new = prune(scores_magnitude(model, masks), masks, 0.2, "global", {"fc3": 0.1})
    assert new["fc3.weight"].sum() == 900
    assert new.count() == 900 + keep_count(0.8, 235200 + 30000)


def test_random_like_keeps_per_layer_counts_and_moves_positions():
    _, masks = lenet_masks()
    masks = prune({n: torch.rand(m.shape) for n, m in masks.items()}, masks, 0.9)
    g = torch.Generator().manual_seed(1)
    rnd = masks.random_like(g)
    assert rnd.layer_counts() == masks.layer_counts()
    assert not torch.equal(rnd["fc1.weight"], masks["fc1.weight"])
    again = masks.random_like(torch.Generator().manual_seed(1))
    assert all(torch.equal(again[n], rnd[n]) for n in rnd)


def test_prunable_names_options():
    model = create_model("lenet-300-100")
    assert prunable_names(model) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert prunable_names(model, keep_first=True, keep_output=True) == ["fc2.weight"]
    assert prunable_names(model, include_bias=True)[:2] == ["fc1.weight", "fc1.bias"]
    with pytest.raises(JackpotError, match="no module"):
        prunable_names(model, keep_layers=["fc9"])


def test_mask_save_load_and_corrupt_file(tmp_path):
    _, masks = lenet_masks()
    masks.save(tmp_path / "m.pt")
    loaded = Masks.load(tmp_path / "m.pt")
    assert loaded.keys() == masks.keys() and all(loaded[n].dtype == torch.bool for n in loaded)
    (tmp_path / "bad.pt").write_bytes(b"not a mask")
    with pytest.raises(JackpotError, match="corrupt"):
        Masks.load(tmp_path / "bad.pt")


def test_masks_refuse_a_model_with_other_shapes():
    _, masks = lenet_masks()
    other = create_model("lenet-300-100", input_shape=(40,))
    with pytest.raises(JackpotError, match="shape"):
        masks.check_against(other)


def test_apply_to_zeroes_exactly_the_pruned_entries_in_place():
    model, full = lenet_masks()
    g = torch.Generator().manual_seed(0)
    masks = Masks({n: torch.rand(m.shape, generator=g) < 0.3 for n, m in full.items()})
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    assert masks.apply_to(model) is model
    for n, p in model.named_parameters():
        assert p is params[n]  # in place: the optimizer's tensors stay the model's
        if n in masks:
            assert torch.equal(p.detach(), torch.where(masks[n], before[n], torch.zeros(())))
        else:  # not masked (biases here): untouched
            assert torch.equal(p.detach(), before[n])
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # no autograd trace


@pytest.mark.parametrize("density", [0.05, 0.5])  # few allowed (only those scored) and many
@pytest.mark.parametrize("ties", ["index", "topk"])
def test_top_k_given_the_allowed_count_selects_what_it_would_count(density, ties):
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(60, 40, generator=g).round(decimals=1)  # many ties
    allowed = torch.rand(60, 40, generator=g) < density
    n = int(allowed.sum())
    flat, where = scores.flatten(), allowed.flatten().nonzero().squeeze(1)
    for k in (0, 1, n // 3, n - 1, n, n + 5):
        got = top_k(scores, k, allowed, ties, n_allowed=n)
        assert torch.equal(got, top_k(scores, k, allowed, ties)), k
        expected = torch.zeros(flat.numel(), dtype=torch.bool)
        if ties == "index":  # the k highest allowed scores, the earliest index first among ties
            expected[sorted(where.tolist(), key=lambda i: (-flat[i].item(), i))[:k]] = True
        elif k >= n:
            expected = allowed.flatten()
        elif density < 1 / 8 and k > 0:  # only the allowed are scored: topk over them, as nonzero() lists them
            expected[where[torch.topk(flat[where], k, sorted=False).indices]] = True
        elif k > 0:
            expected[torch.topk(torch.where(allowed.flatten(), flat, float("-inf")), k, sorted=False).indices] = True
        assert torch.equal(got.flatten(), expected), k


@pytest.mark.parametrize("case", ["distinct", "ties", "zero-mass", "minus-inf", "nan"])
@pytest.mark.parametrize("k_frac", [0.0001, 0.015, 0.4, 0.7, 0.9999])
def test_the_fast_index_selection_is_exactly_a_stable_full_sort(case, k_frac, monkeypatch):
    """Large CPU inputs rank only the entries past a sampled threshold (or, for k above half, find
    the lowest-ranked); the set must be that of a stable descending sort, ties by earliest index,
    whatever the values: masses of equal values at the threshold (ReLU's zero gradients), -inf
    (disallowed positions), NaN (ranked highest, as sort does)."""
    n = masks_mod.FAST_SELECT_MIN * 2 + 7
    g = torch.Generator().manual_seed(7)
    v = torch.rand(n, generator=g)
    if case == "ties":
        v = v.round(decimals=2)
    elif case == "zero-mass":
        v[torch.rand(n, generator=g) < 0.95] = 0.0
    elif case == "minus-inf":
        v[torch.rand(n, generator=g) < 0.8] = float("-inf")
    elif case == "nan":
        v[torch.randint(n, (50,), generator=g)] = float("nan")
    k = max(1, int(k_frac * n))
    full_sorts = []
    real = masks_mod._stable_best
    monkeypatch.setattr(masks_mod, "_stable_best",
                        lambda values, kk: full_sorts.append(values.numel()) or real(values, kk))
    got = torch.zeros(n, dtype=torch.bool)
    got[masks_mod._index_best(v, k)] = True
    if case in ("distinct", "ties", "nan"):  # NaN takes the full sort; spread values never need it
        assert (n in full_sorts) == (case == "nan")
    expected = torch.zeros(n, dtype=torch.bool)
    expected[torch.argsort(v, descending=True, stable=True)[:k]] = True
    assert int(got.sum()) == k and torch.equal(got, expected)


def test_dst_grows_the_earliest_positions_among_equal_scores():
    """RigL with an all-zero dense gradient: every free position ties, so the grown ones are the
    earliest free positions (by flat index) on any device and in either execution mode."""
    lin = torch.nn.Linear(8, 4, bias=False)
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask.view(-1)[[3, 9, 10, 20, 21, 30]] = True
    with torch.no_grad():
        lin.weight.mul_(mask)
        lin.weight.view(-1)[[3, 9, 10, 20, 21, 30]] = torch.tensor([0.6, 0.1, 0.5, 0.2, 0.4, 0.3])
    lin.weight.grad = torch.zeros_like(lin.weight)
    sp = Sparsifier(lin, Masks({"weight": mask}))
    method = make_method("rigl", UpdateSchedule(delta_t=1, alpha=0.5, t_end=10, kind="constant"))
    method.update(1, lin, sp)
    # drop floor(0.5 * 6) = 3 smallest |w| (positions 9, 20, 30); grow 3 among the 29 not kept: all
    # score 0, so the earliest: 0, 1, 2
    assert sp.masks["weight"].view(-1).nonzero().flatten().tolist() == [0, 1, 2, 3, 10, 21]


@pytest.mark.parametrize("n", [300, masks_mod.FAST_SELECT_MIN + 5])  # the full sort and the fast selection
def test_top_k_excluding_indices_equals_top_k_of_the_allowed_mask(n):
    g = torch.Generator().manual_seed(2)
    scores = torch.rand(n, generator=g).round(decimals=2)  # ties
    before = scores.clone()
    excluded = torch.randperm(n, generator=g)[: n // 3]
    allowed = torch.ones(n, dtype=torch.bool)
    allowed[excluded] = False
    for k in (0, 1, n // 10, n // 2, n - excluded.numel() - 1, n - excluded.numel(), n):
        got = top_k(scores, k, ties="index", excluded=excluded)
        assert torch.equal(got, top_k(scores, k, allowed, ties="index")), k
        as_index = top_k_indices(scores, k, excluded, ties="index")
        flags = torch.zeros(n, dtype=torch.bool)
        flags[as_index] = True
        assert as_index.numel() == int(got.sum()) and torch.equal(flags, got), k
    assert torch.equal(scores, before)  # the caller's scores are not written
    scratch = scores.clone()  # ... unless handed over as scratch, which gives the same set
    assert torch.equal(top_k_indices(scratch, n // 10, excluded, scratch=True).sort().values,
                       top_k_indices(scores, n // 10, excluded).sort().values)
    with pytest.raises(ValueError):
        top_k(scores, 1, allowed, excluded=excluded)


@pytest.mark.parametrize("n,share", [(1 << 16, 0.0), (1 << 16, 1e-4), (1 << 18, 0.001), (1 << 18, 0.3),
                                     (1 << 18, 1.0), ((1 << 16) + 3, 0.01), (1000, 0.1)])
def test_flat_nonzero_equals_nonzero(n, share):
    g = torch.Generator().manual_seed(4)
    flags = torch.rand(n, generator=g) < share
    flags[-1] = share > 0  # the last byte of the last word
    assert torch.equal(flat_nonzero(flags), flags.nonzero().squeeze(1))
    if n % 8 == 0:  # a view at an offset that is not a word boundary, and a 2-d view
        for part in (flags[1:-7], flags[8:]):
            assert torch.equal(flat_nonzero(part), part.nonzero().squeeze(1))
        assert torch.equal(flat_nonzero(flags.view(8, -1)), flags.nonzero().squeeze(1))


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (8,), (9,), (3, 5), (4, 3, 3, 3), (64, 129)])
def test_pack_flags_round_trips_and_stores_a_bit_a_flag(shape):
    g = torch.Generator().manual_seed(5)
    flags = torch.rand(shape, generator=g) < 0.3
    packed = pack_flags(flags)
    assert packed["packed_flags"].dtype == torch.uint8
    assert packed["packed_flags"].numel() == -(-flags.numel() // 8)  # ceil(n / 8) bytes
    back = unpack_flags(packed)
    assert back.dtype == torch.bool and back.shape == flags.shape and torch.equal(back, flags)
    # bit i of byte j is flag 8j + i (an independent decoding)
    flat = flags.flatten().tolist()
    for j, byte in enumerate(packed["packed_flags"].tolist()):
        assert [(byte >> i) & 1 for i in range(8)][:len(flat[8 * j:8 * j + 8])] == flat[8 * j:8 * j + 8]
    assert torch.equal(unpack_flags(flags), flags)  # an unpacked (older) checkpoint's tensor passes
    assert torch.equal(unpack_flags(pack_flags(flags[..., ::2] if flags.dim() > 1 else flags)),
                       flags[..., ::2] if flags.dim() > 1 else flags)  # a strided view packs by value


def test_a_few_random_positions_of_many_are_the_first_distinct_uniform_draws():
    from jackpot.sparse.masks import FEW, random_positions
    pool, count = 100_000, 1_000
    assert count * FEW <= pool  # the draw path, not randperm
    flat = random_positions(pool, count, torch.Generator().manual_seed(3))
    assert int(flat.sum()) == count
    assert torch.equal(flat, random_positions(pool, count, torch.Generator().manual_seed(3)))
    # an independent reading of the same stream: the first `count` distinct of its uniform draws
    draws = torch.randint(pool, (count + count // 8 + 16,), generator=torch.Generator().manual_seed(3)).tolist()
    seen = []
    for v in draws:
        if v not in seen:
            seen.append(v)
    assert sorted(seen[:count]) == flat.nonzero().squeeze(1).tolist()


def test_random_positions_are_uniform_on_both_paths():
    from jackpot.sparse.masks import random_positions
    g = torch.Generator().manual_seed(0)
    for pool, count in ((64, 4), (64, 16)):  # the distinct-draws path and the randperm path
        hits = torch.stack([random_positions(pool, count, g) for _ in range(4000)]).sum(0).double()
        mean, sd = 4000 * count / pool, (4000 * count / pool * (1 - count / pool)) ** 0.5
        assert float((hits - mean).abs().max()) < 5 * sd
        assert torch.all(hits.sum() == 4000 * count)
