"""PlainAdam (panolam.refine.adam) is step for step bit-identical to torch.optim.Adam on CPU."""
from __future__ import annotations

import torch

from panolam.refine.adam import PlainAdam, make_adam


def _run(opt_factory, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    target = torch.randn(64, 3)
    params = [torch.zeros(64, 3, requires_grad=True), torch.randn(64, requires_grad=True),
              torch.randn(8, 4, requires_grad=True)]
    opt = opt_factory(params)
    for k in range(steps):
        loss = (params[0] - target).abs().sum() + params[1].sigmoid().pow(2).sum()
        if k % 3:  # the third parameter has no gradient on some steps (skipped, as torch skips it)
            loss = loss + params[2].tanh().sum() * 1e-3
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in params]


def test_bit_identical_to_torch_adam() -> None:
    ours = _run(lambda ps: PlainAdam(ps, 0.1))
    ref = _run(lambda ps: torch.optim.Adam(ps, lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_make_adam_on_cpu_is_plain() -> None:
    assert isinstance(make_adam([torch.zeros(2, requires_grad=True)], 0.1), PlainAdam)
