import pytest
import torch
import torch.nn.functional as F
from torch import nn

from jackpot.errors import JackpotError
from jackpot.models import create_model
from jackpot.sparse import Masks, keep_count, prunable_names, prune
from jackpot.sparse.scores import SCORES, compute_scores, iterative_prune


def _linear_net(d=5, h=4, c=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h, bias=False), nn.Linear(h, c, bias=False))


def _masks(model):
    return Masks.ones_for(model, [n for n, _ in model.named_parameters() if n.endswith("weight")])


def _half_squared(out, y):  # L = 1/2 sum y_i * out_i^2 (y weights each sample)
    return 0.5 * (y * out.squeeze(-1) ** 2).sum()


def test_registry_and_unknown_name():
    assert set(SCORES) == {"magnitude", "magnitude-init-normalized", "random", "snip", "grasp", "synflow"}
    net = _linear_net()
    with pytest.raises(JackpotError, match="valid scores: magnitude"):
        compute_scores("snipp", net, _masks(net), [])


@pytest.mark.parametrize("double", [False, True])
def test_synflow_equals_path_norm_product(double):
    net = _linear_net()
    masks = _masks(net)
    masks["0.weight"][0, 1] = False  # a pruned weight: masked out of the flow and scored 0
    with torch.no_grad():
        net[0].weight[0, 1] = 0.0
    before = {n: p.detach().clone() for n, p in net.state_dict().items()}
    w1, w2 = net[0].weight.detach().abs().double(), net[1].weight.detach().abs().double()
    s = compute_scores("synflow", net, masks, None, input_shape=(5,), double=double)
    # R = 1^T |W2| |W1| 1: dR/d|W1|_ij = colsum(|W2|)_i, dR/d|W2|_ki = rowsum(|W1|)_i
    torch.testing.assert_close(s["0.weight"].double(), w1 * w2.sum(0)[:, None])
    torch.testing.assert_close(s["1.weight"].double(), w2 * w1.sum(1)[None, :])
    assert s["0.weight"][0, 1] == 0
    assert s["0.weight"].dtype == (torch.float64 if double else torch.float32)
    after = net.state_dict()
    assert all(torch.equal(before[n], after[n]) for n in before) and net[0].weight.grad is None


def test_synflow_needs_input_shape_and_leaves_bn_alone():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 2))
    net.train()
    with torch.no_grad():
        net[1].running_mean.fill_(-1.0)
        net[1].weight.fill_(-2.0)
    before = {n: t.clone() for n, t in net.state_dict().items()}
    masks = Masks.ones_for(net, ["0.weight", "3.weight"])
    with pytest.raises(JackpotError, match="input_shape"):
        compute_scores("synflow", net, masks, None)
    s = compute_scores("synflow", net, masks, None, input_shape=(2, 4, 4))
    assert all((v > 0).all() for v in s.values())
    assert all(torch.equal(before[n], t) for n, t in net.state_dict().items()) and net.training


def test_snip_hand_checked():
    net = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -1.0, 2.0]]))
    masks = Masks.ones_for(net, ["weight"])
    batches = [(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1.0])),
               (torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([2.0]))]
    s = compute_scores("snip", net, masks, batches, loss_fn=_half_squared)
    # batch 1: w.x = 5, dL/dw = 5 x = (5, 10, 15); batch 2: w.x = -1, dL/dw = 2 * -1 * (0, 1, 0)
    # summed grad (5, 8, 15); |w * g| = (5, 8, 30)
    torch.testing.assert_close(s["weight"], torch.tensor([[5.0, 8.0, 30.0]]))
    assert net.weight.grad is None
    torch.testing.assert_close(net.weight.detach(), torch.tensor([[1.0, -1.0, 2.0]]))


def test_snip_cross_entropy_keeps_model_state():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).train()
    masks = Masks.ones_for(net, ["0.weight", "3.weight"])
    batches = [(torch.randn(10, 6), torch.randint(0, 3, (10,))) for _ in range(2)]
    before = {n: t.clone() for n, t in net.state_dict().items()}
    s = compute_scores("snip", net, masks, batches)
    assert all(torch.equal(before[n], t) for n, t in net.state_dict().items())  # BN stats put back
    assert all(p.grad is None for p in net.parameters())
    loss = sum(F.cross_entropy(net(x), y) for x, y in batches)
    grads = torch.autograd.grad(loss, [net[0].weight, net[3].weight])
    torch.testing.assert_close(s["0.weight"], (net[0].weight * grads[0]).abs().detach())
    with pytest.raises(JackpotError, match="batches"):
        compute_scores("snip", net, masks, [])


def test_grasp_sign_on_a_quadratic():
    # L = 1/2 θᵀAθ with A = [[1, 2], [2, 1]] = 3 v1 v1ᵀ - v2 v2ᵀ. θ = (1, -2): g = Aθ = (-3, 0),
    # Hg = A g = (-3, -6), keep-score θ ⊙ Hg = (-3, 12). The paper removes the largest -θ ⊙ Hg = (3, -12): a.
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0]]) / 2 ** 0.5
    masks = Masks.ones_for(net, ["weight"])
    s = compute_scores("grasp", net, masks, [(x, torch.tensor([3.0, -1.0]))], loss_fn=_half_squared,
                       temperature=1.0)
    torch.testing.assert_close(s["weight"], torch.tensor([[-3.0, 12.0]]))
    assert prune(s, masks, 0.5, "global")["weight"].tolist() == [[False, True]]
    assert net.weight.grad is None


def test_grasp_matches_autograd_hessian():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False))
    masks = Masks.ones_for(net, ["0.weight", "2.weight"])
    batches = [(torch.randn(5, 3), torch.randint(0, 2, (5,))) for _ in range(2)]
    t = 7.0
    w1, b1, w2 = (p.detach().clone() for p in net.parameters())

    def loss(flat):
        a, c = flat[:12].view(4, 3), flat[12:].view(2, 4)
        return sum(F.cross_entropy(torch.tanh(x @ a.T + b1) @ c.T / t, y) for x, y in batches)

    theta = torch.cat([w1.flatten(), w2.flatten()])
    g = torch.autograd.functional.jacobian(loss, theta)
    expected = theta * (torch.autograd.functional.hessian(loss, theta) @ g)
    s = compute_scores("grasp", net, masks, batches, temperature=t)
    torch.testing.assert_close(torch.cat([s["0.weight"].flatten(), s["2.weight"].flatten()]), expected)


def test_magnitude_scores():
    net = _linear_net()
    masks = _masks(net)
    w = net[0].weight.detach()
    torch.testing.assert_close(compute_scores("magnitude", net, masks, None)["0.weight"], w.abs())
    s = compute_scores("magnitude-init-normalized", net, masks, None, init_scale={"0.weight": 0.5})
    torch.testing.assert_close(s["0.weight"], w.abs() / 0.5)
    torch.testing.assert_close(s["1.weight"], net[1].weight.detach().abs() / net[1].weight.detach().std())


def test_random_scores_seeded():
    net = _linear_net()
    masks = _masks(net)
    with pytest.raises(JackpotError, match="Generator"):
        compute_scores("random", net, masks, None)
    a = compute_scores("random", net, masks, None, generator=torch.Generator().manual_seed(3))
    b = compute_scores("random", net, masks, None, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[n], b[n]) for n in a) and a["0.weight"].shape == (4, 5)


@pytest.mark.parametrize("name", ["magnitude", "snip", "grasp", "synflow"])
def test_invert_is_negation_and_keeps_counts(name):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    masks = Masks.ones_for(net, ["0.weight", "2.weight"])
    batches = [(torch.randn(12, 6), torch.randint(0, 3, (12,)))]
    s = compute_scores(name, net, masks, batches, input_shape=(6,))
    inv = compute_scores(name, net, masks, batches, input_shape=(6,), invert=True)
    assert all(torch.equal(inv[n], -s[n]) for n in s)
    for scope in ("global", "layerwise"):
        kept, kept_inv = prune(s, masks, 0.7, scope), prune(inv, masks, 0.7, scope)
        assert kept.layer_counts() == kept_inv.layer_counts() if scope == "layerwise" else \
            kept.count() == kept_inv.count()
    if name == "magnitude":  # inverted magnitude keeps the smallest weights
        kept_inv = prune(inv, masks, 0.5, "layerwise")["0.weight"]
        w = net[0].weight.detach().abs()
        assert w[kept_inv].max() <= w[~kept_inv].min()


@pytest.mark.parametrize("schedule", ["exponential", "linear"])
def test_iterative_synflow_exact_count_and_monotone(schedule):
    torch.manual_seed(0)
    model = create_model("lenet-300-100")
    names = prunable_names(model)
    masks = Masks.ones_for(model, names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = iterative_prune("synflow", model, masks, None, 0.013, 5, schedule=schedule, input_shape=(1, 28, 28))
    assert out.count() == keep_count(0.013, masks.size())
    assert out.is_subset_of(masks) and all(torch.equal(before[n], p) for n, p in model.named_parameters())
    local = iterative_prune("synflow", model, masks, None, 0.1, 3, scope="layerwise", input_shape=(1, 28, 28))
    assert local.layer_counts() == {n: keep_count(0.1, m.numel()) for n, m in masks.items()}


def test_iterative_one_round_is_one_shot_and_errors():
    net = _linear_net()
    masks = _masks(net)
    one = iterative_prune("magnitude", net, masks, None, 0.4, 1)
    ref = prune(compute_scores("magnitude", net, masks, None), masks, 0.6, "global")
    assert all(torch.equal(one[n], ref[n]) for n in masks) and one.count() == keep_count(0.4, 32)
    with pytest.raises(JackpotError, match="density"):
        iterative_prune("magnitude", net, masks, None, 0.0, 2)
    with pytest.raises(JackpotError, match="schedule"):
        iterative_prune("magnitude", net, masks, None, 0.5, 2, schedule="cubic")
    with pytest.raises(JackpotError, match="unknown score"):
        iterative_prune("nope", net, masks, None, 0.5, 2)
