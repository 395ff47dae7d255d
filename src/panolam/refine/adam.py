"""A plain Adam for the photo refinement on CPU, step for step bit-identical to ``torch.optim.Adam``'s
single-tensor path (what torch uses for CPU tensors: no foreach, no fused, no weight decay, no amsgrad).

Why not torch's: constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use,
~1.6 s of a cold ``panolam reconstruct`` on a 2-core CPU, for three small tensors and 20 steps.
"""
from __future__ import annotations

import torch


def make_adam(params: list[torch.Tensor], lr: float) -> "PlainAdam | torch.optim.Adam":
    """:class:`PlainAdam` when every parameter is on the CPU (bit-identical there), else torch's Adam."""
    if all(p.device.type == "cpu" for p in params):
        return PlainAdam(params, lr)
    return torch.optim.Adam(params, lr=lr)


class PlainAdam:
    """``torch.optim.Adam(params, lr=lr)`` with default betas (0.9, 0.999) and eps 1e-8, for CPU tensors."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps = float(lr), betas, eps
        self.state: dict[int, tuple[torch.Tensor, torch.Tensor, list[float]]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            if i not in self.state:
                zeros = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[i] = (zeros, zeros.clone(), [0.0])
            exp_avg, exp_avg_sq, count = self.state[i]
            count[0] += 1.0  # torch keeps a float32 step tensor and reads it back with .item()
            step = count[0]
            grad = p.grad
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = self.lr / (1 - beta1 ** step)
            denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(self.eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)
