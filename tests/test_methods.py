"""SSL methods: losses against plain-loop references, MoCo's queue and momentum, SimSiam's
stop-gradient, the backbone scopes, the registry, and a few steps that must lower each loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mosl_cli.errors import MoslError
from mosl_cli.methods import METHODS, PooledBackbone, SSLMethod, embedding_std
from mosl_cli.methods.heads import Block, build_head
from mosl_cli.methods.moco import KeyQueue, MoCo, copy_params, infonce, momentum_update
from mosl_cli.methods.simclr import nt_xent
from mosl_cli.methods.simsiam import SimSiam, simsiam_loss
from mosl_cli.models import build_model


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """NT-Xent written out: anchor i's positive is its other view, every other row a negative."""
    z = _unit(np.concatenate([z1, z2]).astype(np.float64))
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(math.exp(z[i] @ z[k] / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(z[i] @ z[positive] / t) / denominator)
    return total / (2 * n)


def infonce_reference(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> float:
    total = 0.0
    for i in range(len(q)):
        logits = [q[i] @ k[i] / t] + [q[i] @ queue[j] / t for j in range(len(queue))]
        total += -(logits[0] - math.log(sum(math.exp(v) for v in logits)))
    return total / len(q)


def negative_cosine_reference(p: np.ndarray, z: np.ndarray) -> float:
    return float(np.mean([-(p[i] @ z[i]) / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(len(p))]))


# --------------------------------------------------------------------------- losses


def test_nt_xent_matches_reference() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    for t in (0.1, 0.5):
        got = nt_xent(z1, z2, t).item()
        assert got == pytest.approx(nt_xent_reference(z1.numpy(), z2.numpy(), t), rel=1e-5)


def test_infonce_matches_reference() -> None:
    g = torch.Generator().manual_seed(1)
    q, k = F.normalize(torch.randn(4, 3, generator=g), dim=1), F.normalize(torch.randn(4, 3, generator=g), dim=1)
    queue = F.normalize(torch.randn(6, 3, generator=g), dim=1)
    got = infonce(q, k, queue, 0.2).item()
    assert got == pytest.approx(infonce_reference(q.numpy(), k.numpy(), queue.numpy(), 0.2), rel=1e-5)


def test_simsiam_loss_matches_reference_and_stops_gradient() -> None:
    g = torch.Generator().manual_seed(2)
    p1, p2, z1, z2 = (torch.randn(5, 4, generator=g).requires_grad_() for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    expected = 0.5 * negative_cosine_reference(p1.detach().numpy(), z2.detach().numpy()) + 0.5 * (
        negative_cosine_reference(p2.detach().numpy(), z1.detach().numpy())
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert z1.grad is None and z2.grad is None, "no gradient may reach the target branch"
    assert p1.grad is not None and p1.grad.abs().sum() > 0


def test_embedding_std_detects_collapse() -> None:
    g = torch.Generator().manual_seed(3)
    assert embedding_std(torch.randn(1, 64).repeat(32, 1)) == pytest.approx(0.0, abs=1e-6)
    healthy = embedding_std(torch.randn(4096, 64, generator=g))
    assert healthy == pytest.approx(1 / math.sqrt(64), rel=0.05)


# --------------------------------------------------------------------------- MoCo parts


def test_key_queue_enqueue_and_wrap() -> None:
    queue = KeyQueue(5, 2)
    first = torch.arange(6.0).view(3, 2)
    queue.enqueue(first)
    assert int(queue.ptr) == 3 and torch.equal(queue.keys[:3], first)
    second = 10 + torch.arange(6.0).view(3, 2)
    before = queue.keys.clone()
    queue.enqueue(second)
    assert int(queue.ptr) == 1
    assert torch.equal(queue.keys[3:5], second[:2]) and torch.equal(queue.keys[0], second[2])
    assert torch.equal(queue.keys[1:3], before[1:3]), "slots not yet reached keep their keys"
    many = 100 + torch.arange(14.0).view(7, 2)
    queue.enqueue(many)  # more keys than slots: the newest `size` survive
    assert int(queue.ptr) == 1
    assert {tuple(r) for r in queue.keys.tolist()} == {tuple(r) for r in many[2:].tolist()}
    assert set(dict(queue.named_buffers())) == {"keys", "ptr"}


def test_momentum_update_and_copy_params() -> None:
    torch.manual_seed(0)
    online = build_head([Block(3, 4, True, True), Block(4, 2, False, False)])
    target = build_head([Block(3, 4, True, True), Block(4, 2, False, False)])
    copy_params(online, target)
    assert all(torch.equal(a, b) for a, b in zip(online.state_dict().values(), target.state_dict().values()))
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    old = [p.clone() for p in target.parameters()]
    momentum_update(online, target, 0.9)
    for t_new, t_old, o in zip(target.parameters(), old, online.parameters()):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * o)


# --------------------------------------------------------------------------- backbone, registry, heads


def _backbone(scope: str = "encoder") -> PooledBackbone:
    return PooledBackbone(build_model("unet", "resnet18", 1), scope)


@pytest.mark.parametrize(("scope", "dim"), [("encoder", 512), ("encoder-decoder", 512 + 16)])
def test_backbone_scopes(scope: str, dim: int) -> None:
    torch.manual_seed(0)
    backbone = _backbone(scope)
    assert backbone.feature_dim == dim
    out = backbone(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, dim)
    out.square().sum().backward()
    decoder_grads = [p.grad for p in backbone.model.decoder.parameters()]
    if scope == "encoder":
        assert all(g is None for g in decoder_grads)
        assert not any(p.requires_grad for p in backbone.model.decoder.parameters())
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in decoder_grads)
    assert not any(p.requires_grad for p in backbone.model.segmentation_head.parameters())


def test_backbone_rejects_unknown_scope() -> None:
    with pytest.raises(MoslError, match="--scope"):
        PooledBackbone(build_model("unet", "resnet18", 1), "decoder")


def test_registry_and_hparams() -> None:
    assert set(METHODS) == {"simclr", "moco", "simsiam", "mim"}
    for name, cls in METHODS.items():
        assert cls.name == name and issubclass(cls, SSLMethod)
        assert {"base_lr", "weight_decay", "sgd_momentum"} <= set(cls.defaults)
    backbone = _backbone()
    simclr = METHODS["simclr"](backbone, temperature=None, proj_dim=64, momentum=None)
    assert simclr.hparams["temperature"] == 0.2 and simclr.hparams["proj_dim"] == 64
    assert simclr.hparams["proj_hidden"] == 512
    assert simclr(torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)).embedding.shape == (4, 64)
    with pytest.raises(MoslError, match="--temperature does not apply to --method simsiam"):
        METHODS["simsiam"](_backbone(), temperature=0.5)
    with pytest.raises(MoslError, match="--queue-size"):
        METHODS["moco"](_backbone(), queue_size=0)
    simsiam = SimSiam(_backbone())
    assert (simsiam.hparams["proj_dim"], simsiam.hparams["pred_hidden"]) == (512, 128)


def test_head_blocks_become_layers() -> None:
    head = build_head([Block(8, 6, True, True), Block(6, 4, True, False, affine=False), Block(4, 2, False, False)])
    kinds = [type(m) for m in head]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.Linear]
    assert head[0].bias is None and head[5].bias is not None and not head[4].affine


def test_param_groups() -> None:
    simsiam = SimSiam(_backbone())
    groups = simsiam.param_groups()
    assert groups[1].get("fix_lr") is True
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in simsiam.predictor.parameters()}
    moco = MoCo(_backbone(), queue_size=16)
    ids = {id(p) for g in moco.param_groups() for p in g["params"]}
    assert not ids & {id(p) for p in moco.key_backbone.parameters()}
    assert not ids & {id(p) for p in moco.key_projector.parameters()}
    assert ids == {id(p) for p in moco.parameters() if p.requires_grad}


# --------------------------------------------------------------------------- method behaviour


def test_simsiam_method_stops_gradient_at_the_targets() -> None:
    """The gradient reaching z1, z2 must be exactly the one through the predictor branch."""
    torch.manual_seed(0)
    method = SimSiam(_backbone(), proj_dim=32, proj_hidden=32, pred_hidden=8)
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    method.projector.register_forward_hook(keep)
    v1, v2 = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    method(v1, v2).loss.backward()
    z1, z2 = captured
    a1, a2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    manual = 0.5 * -F.cosine_similarity(method.predictor(a1), z2.detach(), dim=1).mean()
    manual = manual + 0.5 * -F.cosine_similarity(method.predictor(a2), z1.detach(), dim=1).mean()
    g1, g2 = torch.autograd.grad(manual, [a1, a2])
    torch.testing.assert_close(z1.grad, g1)
    torch.testing.assert_close(z2.grad, g2)


def test_moco_enqueues_keys_of_view2_and_momentum_moves_keys() -> None:
    torch.manual_seed(0)
    method = MoCo(_backbone(), queue_size=6, momentum=0.5)
    v1, v2 = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        expected_keys = F.normalize(method.key_projector(method.key_backbone(v2)), dim=1)
    method.train()
    method(v1, v2)
    assert int(method.queue.ptr) == 4
    torch.testing.assert_close(method.queue.keys[:4], expected_keys)
    method.eval()
    method(v1, v2)
    assert int(method.queue.ptr) == 4, "evaluation must not enqueue"
    with torch.no_grad():
        for p in method.projector.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.key_projector.parameters()]
    method.after_step()
    for new, old, online in zip(method.key_projector.parameters(), before, method.projector.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * online)


@pytest.mark.parametrize("name", ["simclr", "moco", "simsiam"])
def test_a_few_steps_lower_the_loss(name: str) -> None:
    torch.manual_seed(0)
    method = METHODS[name](_backbone(), **({"queue_size": 64} if name == "moco" else {}))
    method.train()
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(8, 1, 32, 32, generator=g), torch.randn(8, 1, 32, 32, generator=g)
    v2 = 0.5 * v1 + 0.5 * v2  # views of one "image" share content
    queue = method.queue.keys.clone() if isinstance(method, MoCo) else None

    def evaluate() -> float:
        if queue is not None:  # the same negatives before and after training
            method.queue.keys.copy_(queue)
        with torch.no_grad():
            return method(v1, v2).loss.item()

    start = evaluate()
    optimizer = torch.optim.SGD(method.param_groups(), lr=0.05, momentum=0.9)
    for _ in range(5):
        out = method(v1, v2)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        method.after_step()
        assert out.embedding.shape[0] == 8 and not out.embedding.requires_grad
    assert evaluate() < start - 1e-3
