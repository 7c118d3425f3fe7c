"""One training step of any model: forward and loss, backward, optimizer update.

A family supports the 'train' phase by building its model and handing `train_step` a loss
closure (a zero-argument callable that runs the forward pass and returns a scalar loss); the
returned WorkloadStep is traced like any other step. Roles in the trace:

- the parameters are 'weight' (as in every step);
- each parameter's .grad storage is 'gradient', named '<param>.grad';
- the optimizer's state tensors are 'optimizer_state', named '<param>.<state>'.

Each parameter's update is recorded as one fused kernel (memsim.trace.capture.run_fused), as
torch's fused AdamW and bitsandbytes' 8-bit kernels run it: it reads the parameter, its
gradient and its states once and writes the parameter and the states once; the readable torch
code that computes it runs on real tensors and is skipped on meta ones.

The step is a steady-state step: the optimizer states exist before it (they are created when
the step is built, as after the first step of a run), and gradients are created by backward
(as after `zero_grad(set_to_none=True)`). Ops get the module scopes of the forward pass, then
'loss', 'backward' and 'optimizer'.

Optimizers (`StepSpec.optimizer`):

- ``adamw``: AdamW with fp32 exp_avg and exp_avg_sq, whatever the parameter dtype; the update
  is computed in fp32 and written back in the parameter's dtype.
- ``adam8bit[:block=N,scale=DTYPE]``: block-wise 8-bit Adam (bitsandbytes style). Each state is
  stored as one byte per element (int8 for exp_avg, uint8 for exp_avg_sq; the element count is
  padded to whole blocks) plus one absmax scale per block in DTYPE (fp32, bf16 or fp16); it is
  dequantised to fp32 for the update and requantised after. Codes are linear in the absmax
  (bitsandbytes uses a non-linear code map; the bytes moved and stored are the same).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from memsim.errors import MemsimError
from memsim.trace.capture import run_fused, scope, tag
from memsim.trace.workload import TORCH_DTYPES, StepSpec, WorkloadStep

OPTIMIZERS = ("adamw", "adam8bit")
# Arithmetic per parameter element: the two moment updates, the bias-corrected step, decay and
# update (about 14), and for 8-bit states their dequantisation and requantisation (about 8).
ADAM_FLOPS_PER_ELEMENT = 14
QUANTIZE_FLOPS_PER_ELEMENT = 8


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str = "adamw"
    block_size: int = 2048
    """adam8bit: elements that share one scale."""
    scale_dtype: str = "fp32"
    """adam8bit: dtype of the per-block scales."""
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01


def parse_optimizer(text: str) -> OptimizerSpec:
    """'adamw', 'adam8bit' or 'adam8bit:block=256,scale=bf16' -> OptimizerSpec."""
    kind, _, options = text.partition(":")
    if kind not in OPTIMIZERS:
        close = difflib.get_close_matches(kind, OPTIMIZERS, n=1)
        hint = f"did you mean {close[0]}?" if close else f"expected one of {', '.join(OPTIMIZERS)}"
        raise MemsimError(f"unknown optimizer '{kind}' ({hint})")
    spec = OptimizerSpec(kind=kind)
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if kind != "adam8bit" or key not in ("block", "scale"):
            raise MemsimError(f"optimizer '{text}': unknown option '{key}' (adam8bit takes block=N and scale=DTYPE)")
        if key == "block" and not (value.isdigit() and int(value) >= 1):
            raise MemsimError(f"optimizer '{text}': block must be a positive integer, not {value!r}")
        if key == "scale" and value not in ("fp32", "bf16", "fp16"):
            raise MemsimError(f"optimizer '{text}': scale must be fp32, bf16 or fp16, not {value!r}")
        spec = replace(spec, block_size=int(value)) if key == "block" else replace(spec, scale_dtype=value)
    return spec


def adam_direction(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
                   spec: OptimizerSpec) -> torch.Tensor:
    """Update the fp32 moments in place and return the bias-corrected Adam step (times lr)."""
    beta1, beta2 = spec.betas
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denominator = (exp_avg_sq / (1 - beta2 ** step)).sqrt_().add_(spec.eps)
    return exp_avg / denominator * (spec.lr / (1 - beta1 ** step))


def apply_update(param: torch.Tensor, update: torch.Tensor, spec: OptimizerSpec) -> None:
    """Decoupled weight decay and the step, in fp32, written back in the parameter's dtype."""
    master = param.float()  # the parameter itself when it is fp32
    master.mul_(1 - spec.lr * spec.weight_decay).sub_(update)
    if master is not param:
        param.copy_(master)


class AdamW:
    """AdamW with fp32 moments for every parameter."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], spec: OptimizerSpec):
        self.spec = spec
        self.step_count = 1
        self.states = []
        for name, param in named_params:
            moments = [tag(torch.zeros(param.shape, device=param.device, dtype=torch.float32), "optimizer_state",
                           f"{name}.{state}") for state in ("exp_avg", "exp_avg_sq")]
            self.states.append((param, *moments))

    def _update(self, param, exp_avg, exp_avg_sq) -> None:
        apply_update(param, adam_direction(param.grad.float(), exp_avg, exp_avg_sq, self.step_count, self.spec),
                     self.spec)

    def step(self) -> None:
        for param, exp_avg, exp_avg_sq in self.states:
            run_fused("memsim::fused_adamw", partial(self._update, param, exp_avg, exp_avg_sq),
                      reads=[param, param.grad, exp_avg, exp_avg_sq], writes=[param, exp_avg, exp_avg_sq],
                      flops=ADAM_FLOPS_PER_ELEMENT * param.numel())
        self.step_count += 1


class BlockwiseAdam8bit:
    """Adam whose moments are stored as 8-bit codes with one absmax scale per block."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], spec: OptimizerSpec):
        self.spec = spec
        self.step_count = 1
        self.states = []
        scale_dtype = TORCH_DTYPES[spec.scale_dtype]
        for name, param in named_params:
            blocks = math.ceil(param.numel() / spec.block_size)
            state = [param]
            for moment, code_dtype in (("exp_avg", torch.int8), ("exp_avg_sq", torch.uint8)):
                codes = torch.zeros((blocks, spec.block_size), device=param.device, dtype=code_dtype)
                scales = torch.zeros(blocks, device=param.device, dtype=scale_dtype)
                state += [tag(codes, "optimizer_state", f"{name}.{moment}.codes"),
                          tag(scales, "optimizer_state", f"{name}.{moment}.scales")]
            self.states.append(tuple(state))

    @staticmethod
    def _levels(codes: torch.Tensor) -> float:
        return 127.0 if codes.dtype == torch.int8 else 255.0

    def _dequantize(self, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        return codes.float() * (scales.float() / self._levels(codes)).unsqueeze(1)

    def _quantize_into(self, values: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> None:
        absmax = values.abs().amax(dim=1)
        scales.copy_(absmax)
        levels = self._levels(codes)
        codes.copy_((values * (levels / absmax.clamp_min(torch.finfo(torch.float32).tiny)).unsqueeze(1)).round_())

    def _update(self, param, m_codes, m_scales, v_codes, v_scales) -> None:
        blocks, block = m_codes.shape
        grad = F.pad(param.grad.float().reshape(-1), (0, blocks * block - param.numel())).view(blocks, block)
        exp_avg = self._dequantize(m_codes, m_scales)
        exp_avg_sq = self._dequantize(v_codes, v_scales)
        update = adam_direction(grad, exp_avg, exp_avg_sq, self.step_count, self.spec)
        apply_update(param, update.view(-1)[: param.numel()].view_as(param), self.spec)
        self._quantize_into(exp_avg, m_codes, m_scales)
        self._quantize_into(exp_avg_sq, v_codes, v_scales)

    def step(self) -> None:
        for state in self.states:
            param, *moments = state
            run_fused("memsim::fused_adam8bit_blockwise", partial(self._update, *state),
                      reads=[param, param.grad, *moments], writes=[param, *moments],
                      flops=(ADAM_FLOPS_PER_ELEMENT + QUANTIZE_FLOPS_PER_ELEMENT) * param.numel())
        self.step_count += 1


def make_optimizer(module: torch.nn.Module, spec: OptimizerSpec):
    params = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    return (AdamW if spec.kind == "adamw" else BlockwiseAdam8bit)(params, spec)


def train_step(module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], spec: StepSpec) -> WorkloadStep:
    """A WorkloadStep running forward (loss_fn), backward and one optimizer step on `module`."""
    optimizer = make_optimizer(module, parse_optimizer(spec.optimizer))
    named = [(name, param) for name, param in module.named_parameters() if param.requires_grad]
    module.train()

    def run():
        for _, param in named:
            param.grad = None
        with scope("loss"):
            loss = loss_fn()
        with scope("backward"):
            loss.backward()
        for name, param in named:
            if param.grad is not None:
                tag(param.grad, "gradient", f"{name}.grad")
        with scope("optimizer"), torch.no_grad():
            optimizer.step()
        return loss.detach()

    return WorkloadStep(run=run, module=module, spec=spec)
