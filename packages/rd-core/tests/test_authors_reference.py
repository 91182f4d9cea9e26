"""``variant="authors"`` against the authors' module, written out here from reading it.

The reference is ``DConv`` of MultimediaTechLab/YOLO (``yolo/model/module.py``) as read there:
``CG = Conv(f, N, 1)`` (conv without bias + BatchNorm(eps=1e-3, momentum=3e-2) + SiLU),
``GIE = Conv(N, N, 5, groups=N, activation=False)``, ``D = Conv(N, f, 1, activation=False)``,
``PONO(x) = (x - x.mean(1)) / (x.std(1) + 1e-5)`` (unbiased std), and
``forward(r) = alpha * D(PONO(GIE(CG(r)))) + (1 - alpha) * r`` with ``alpha = 0.8``.
It is rebuilt below from torch primitives only, with their attribute names, so that its
state dict has their keys; nothing of rd-core is used to compute it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rd_core import RetrieverDictionary, official

F_CH, N_ATOMS, ALPHA = 24, 512, 0.8  # N = 512 as in their rd-9c: the unbiased std matters


class _Conv(nn.Module):  # their Conv block: conv (no bias, 'same' padding) -> BN -> act
    def __init__(self, c_in: int, c_out: int, k: int, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3, momentum=3e-2)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class AuthorsDConv(nn.Module):
    def __init__(self, in_channels: int, alpha: float = 0.8, atoms: int = 512):
        super().__init__()
        self.alpha = alpha
        self.CG = _Conv(in_channels, atoms, 1)
        self.GIE = _Conv(atoms, atoms, 5, groups=atoms, act=False)
        self.D = _Conv(atoms, in_channels, 1, act=False)

    @staticmethod
    def PONO(x):  # their name
        return (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-5)

    def forward(self, r):
        return self.alpha * self.D(self.PONO(self.GIE(self.CG(r)))) + (1 - self.alpha) * r


OURS_FOR_THEIRS = {"CG": "retriever.generator", "GIE": "retriever.exchanger", "D": "dictionary"}


def _pair(seed: int = 0) -> tuple[AuthorsDConv, RetrieverDictionary]:
    torch.manual_seed(seed)
    theirs = AuthorsDConv(F_CH, ALPHA, N_ATOMS)
    with torch.no_grad():  # non-trivial BN affine terms and running statistics
        for name, t in theirs.named_parameters():
            if name.endswith("bn.weight"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("bn.bias"):
                t.normal_(0, 0.3)
        for name, t in theirs.named_buffers():
            if name.endswith("running_mean"):
                t.normal_(0, 0.2)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
    ours = RetrieverDictionary(
        F_CH, num_atoms=N_ATOMS, kernel_size=5, residual=ALPHA, variant="authors"
    )
    mapped = {}
    for key, value in theirs.state_dict().items():
        head, _, rest = key.partition(".")
        mapped[f"{OURS_FOR_THEIRS[head]}.{rest}"] = value.clone()
    ours.load_state_dict(mapped)  # strict: the same tensors, one to one
    return theirs, ours


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_authors_variant_matches_their_forward(mode):
    theirs, ours = _pair()
    theirs.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(2, F_CH, 9, 7)
    with torch.no_grad():  # eval + no_grad: rd-core's folded-dictionary path
        assert _relative(ours(x), theirs(x)) <= 1e-5
    # with autograd: the unfolded path. (In train mode D's BatchNorm cancels a uniform
    # scale of the coefficients, so a biased-std PONO shows only in eval mode and in the
    # running statistics after a step, below: 8e-4 relative there at N = 512.)
    assert _relative(ours(x), theirs(x)) <= 1e-5


def test_training_step_keeps_parameters_and_running_statistics_equal():
    theirs, ours = _pair(1)
    theirs.train()
    ours.train()
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    x = torch.randn(2, F_CH, 8, 8)
    target = torch.randn(2, F_CH, 8, 8)
    for model, opt in ((theirs, opt_theirs), (ours, opt_ours)):
        opt.zero_grad()
        ((model(x) - target) ** 2).mean().backward()
        opt.step()
    ours_state = ours.state_dict()
    for key, value in theirs.state_dict().items():
        head, _, rest = key.partition(".")
        mine = ours_state[f"{OURS_FOR_THEIRS[head]}.{rest}"]
        if value.is_floating_point():
            assert _relative(mine, value) <= 1e-5, key
        else:
            assert torch.equal(mine, value), key  # num_batches_tracked
    theirs.eval()
    ours.eval()
    x = torch.randn(1, F_CH, 6, 6)
    with torch.no_grad():
        assert _relative(ours(x), theirs(x)) <= 1e-5


def test_official_load_reads_their_keys():
    theirs, _ = _pair(2)
    theirs.eval()
    rd = official.load(theirs.state_dict()).eval()
    assert (rd.in_channels, rd.num_atoms, rd.kernel_size, rd.variant) == (
        F_CH,
        N_ATOMS,
        5,
        "authors",
    )
    x = torch.randn(1, F_CH, 6, 6)
    with torch.no_grad():
        assert _relative(rd(x), theirs(x)) <= 1e-5


def _their_checkpoint(theirs: AuthorsDConv, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in theirs.state_dict().items()}


def test_official_load_unwraps_their_trainers_layouts(tmp_path):
    theirs, _ = _pair(3)
    theirs.eval()
    x = torch.randn(1, F_CH, 5, 5)
    with torch.no_grad():
        expected = theirs(x)
    other = {"model.3.conv.weight": torch.randn(8, 8, 3, 3)}  # the rest of a YOLO model
    layouts = {
        "lightning": {
            "state_dict": {**other, **_their_checkpoint(theirs, "model.model.4.dconv.")},
            "epoch": 3,
        },
        "model": {"model": _their_checkpoint(theirs, "4.dconv.")},
        "plain": _their_checkpoint(theirs, "4.dconv."),
    }
    for name, checkpoint in layouts.items():
        path = tmp_path / f"{name}.pt"
        torch.save(checkpoint, path)
        for source in (checkpoint, path):
            for prefix in (None, "4.dconv.", "4.dconv"):
                rd = official.load(source, prefix=prefix).eval()
                with torch.no_grad():
                    assert _relative(rd(x), expected) <= 1e-5, (name, prefix)
    assert official.find(layouts["lightning"]) == ["model.model.4.dconv."]


def test_official_load_errors_name_what_is_wrong():
    theirs, _ = _pair(4)
    two = {**_their_checkpoint(theirs, "4.dconv."), **_their_checkpoint(theirs, "9.dconv.")}
    with pytest.raises(ValueError, match=r"2 authors' RD modules.*4\.dconv\..*9\.dconv\..*prefix"):
        official.load(two)
    with pytest.raises(ValueError, match=r"prefix='7\.dconv\.'.*found at \['4\.dconv\.'"):
        official.load(_their_checkpoint(theirs, "4.dconv."), prefix="7.dconv.")
    with pytest.raises(ValueError, match=r"no authors' RD module"):
        official.load({"conv.weight": torch.zeros(1)})
    broken = _their_checkpoint(theirs, "")
    del broken["D.bn.running_var"]
    broken["PONO.weight"] = torch.ones(N_ATOMS)  # a paper-style affine PONO term
    with pytest.raises(
        ValueError, match=r"missing \['dictionary\.bn\.running_var'\].*PONO\.weight"
    ):
        official.load(broken)
    with pytest.raises(TypeError, match="num_atoms comes from the weights"):
        official.load(_their_checkpoint(theirs, ""), num_atoms=8)
