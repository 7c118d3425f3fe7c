"""What an aten op is, for costing: its category, its FLOPs and its problem dimensions.

Categories are what the cost models dispatch on. FLOPs come from torch's own registered
formulas where they exist (matmuls, convolutions, fused attention), otherwise from the element
count with a small per-op factor.
"""
from __future__ import annotations

import math
import re

import torch
from torch.utils import flop_counter

# scan: a recurrence stepped element by element; chunked_scan: one computed chunk by chunk with
# matrix multiplies (Mamba-2 SSD, chunked linear attention), which runs on the matrix units.
# conv: a convolution, priced at the matrix rate on its FLOPs with a fixed cost of its own: a
# library sets up each call (oneDNN builds a primitive for it on a CPU: ~50 us for a depthwise
# conv1d that computes in 1 us; cuDNN picks an algorithm), which a matmul's fixed cost misses.
# factory: an op that creates a tensor from sizes and fills it (ones, zeros, arange): an allocation
# and a fill, each dispatched through ATen; on a CPU, where an op's time is its host time, it costs
# about two small ops' (6-11 us traced on a Sapphire Rapids core, where a neg takes 3).
# strided: an elementwise op or copy over non-contiguous (strided or broadcast) operands. GPU
# frameworks vectorise loads only when every operand is contiguous; otherwise each thread loads
# one element through an index calculation, and the kernel streams at a fraction of the rate
# (PyTorch's elementwise_kernel against vectorized_elementwise_kernel).
CATEGORIES = ("gemm", "conv", "attention", "elementwise", "strided", "factory", "reduction", "norm", "copy", "gather",
              "scan", "chunked_scan", "memcpy", "collective", "p2p", "other")
STREAMING_CATEGORIES = ("elementwise", "copy")

GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm", "aten::addbmm"}
CONV_OPS = {"aten::convolution", "aten::_convolution", "aten::convolution_backward"}
ATTENTION_OPS = {"aten::_scaled_dot_product_flash_attention", "aten::_scaled_dot_product_efficient_attention",
                 "aten::_scaled_dot_product_cudnn_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_flash_attention_forward", "aten::_efficient_attention_forward",
                 "aten::scaled_dot_product_attention",
                 "aten::_scaled_dot_product_flash_attention_backward",
                 "aten::_scaled_dot_product_efficient_attention_backward",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                 "aten::_flash_attention_backward", "aten::_efficient_attention_backward"}
NORM_OPS = {"aten::native_layer_norm", "aten::layer_norm", "aten::rms_norm", "aten::_fused_rms_norm",
            "aten::native_group_norm", "aten::native_batch_norm", "aten::_native_batch_norm_legit",
            "aten::native_layer_norm_backward", "aten::_fused_rms_norm_backward"}
SOFTMAX_OPS = {"aten::_softmax", "aten::_safe_softmax", "aten::_log_softmax", "aten::softmax",
               "aten::_softmax_backward_data", "aten::_log_softmax_backward_data"}
COPY_OPS = {"aten::copy_", "aten::_to_copy", "aten::clone", "aten::cat", "aten::stack", "aten::index_copy_",
            "aten::index_copy", "aten::slice_scatter", "aten::select_scatter", "aten::index_put_",
            "aten::index_put", "aten::constant_pad_nd", "aten::repeat", "aten::_unsafe_index_put",
            "aten::roll", "aten::flip", "aten::tril", "aten::triu", "aten::masked_fill", "aten::masked_fill_"}
GATHER_OPS = {"aten::embedding", "aten::index_select", "aten::gather", "aten::index", "aten::_unsafe_index",
              "aten::take_along_dim", "aten::embedding_dense_backward", "aten::scatter_add", "aten::scatter_add_",
              "aten::scatter", "aten::scatter_", "aten::index_add", "aten::index_add_", "aten::topk", "aten::sort"}
# Losses: a reduction over the logits forward, a tensor the size of the logits backward.
LOSS_OPS = {"aten::nll_loss_forward", "aten::nll_loss_backward", "aten::nll_loss2d_forward",
            "aten::nll_loss2d_backward", "aten::mse_loss", "aten::mse_loss_backward"}
SCAN_OPS = {"aten::cumsum", "aten::cumprod", "aten::logcumsumexp", "aten::_cummax_helper", "aten::_cummin_helper"}
FILL_OPS = {"aten::fill_", "aten::zero_", "aten::normal_", "aten::uniform_", "aten::bernoulli_", "aten::random_"}
FACTORY_OPS = {"aten::zeros", "aten::ones", "aten::full", "aten::zeros_like", "aten::ones_like", "aten::full_like",
               "aten::arange", "aten::scalar_tensor", "aten::randn", "aten::rand", "aten::randint", "aten::randn_like",
               "aten::rand_like", "aten::linspace", "aten::eye", "aten::new_zeros", "aten::new_ones", "aten::new_full"}
# Pointwise ops that torch does not tag as pointwise.
UNTAGGED_POINTWISE_OPS = {"aten::floor_divide", "aten::floor_divide_", "aten::remainder", "aten::remainder_",
                          "aten::log_sigmoid_forward", "aten::log_sigmoid_backward"}
# Ops that only allocate: they create a tensor but move no data.
ALLOC_OPS = {"aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty",
             "aten::new_empty_strided", "aten::resize_", "aten::set_"}
# Ops that only look at metadata or alias their input.
FREE_OPS = {"aten::_unsafe_view", "aten::detach", "aten::lift_fresh", "aten::_reshape_alias",
            "aten::_local_scalar_dense", "aten::sym_size", "aten::sym_stride", "aten::sym_numel",
            "aten::is_same_size", "aten::_has_compatible_shallow_copy_type", "aten::size", "aten::stride",
            "aten::dim", "aten::record_stream", "aten::equal", "aten::is_nonzero"}
# In-place ops that overwrite their first argument without reading it.
WRITE_ONLY_OPS = {"aten::copy_", "aten::fill_", "aten::zero_", "aten::normal_", "aten::uniform_",
                  "aten::random_", "aten::bernoulli_"}
# In-place ops that write only the part of their first argument that their source covers.
SCATTER_OPS = {"aten::index_copy_", "aten::index_put_", "aten::_unsafe_index_put", "aten::scatter_",
               "aten::scatter_add_", "aten::index_add_", "aten::masked_scatter_", "aten::index_fill_"}
COLLECTIVE_PREFIXES = ("c10d::", "_c10d_functional::", "nccl")
# A collective op that is one rank sending to another (c10d::send, c10d::recv_): category p2p.
POINT_TO_POINT = re.compile(r"send|recv", re.I)

# FLOPs per output element for non-matmul work: a rough count of arithmetic in each.
_FLOPS_PER_ELEMENT = {"norm": 5.0, "softmax": 5.0, "elementwise": 1.0, "reduction": 1.0, "scan": 1.0}


def categorize(name: str, tags=()) -> str:
    """The cost-model category of an aten op, from its name and its torch tags."""
    if name in GEMM_OPS:
        return "gemm"
    if name in CONV_OPS:
        return "conv"
    if name in ATTENTION_OPS:
        return "attention"
    if name in NORM_OPS:
        return "norm"
    if name in SOFTMAX_OPS or name in LOSS_OPS:
        return "reduction"
    if name in COPY_OPS:
        return "copy"
    if name in GATHER_OPS:
        return "gather"
    if name in SCAN_OPS:
        return "scan"
    if name in FACTORY_OPS:
        return "factory"
    if name in FILL_OPS or name in UNTAGGED_POINTWISE_OPS:
        return "elementwise"
    if name.startswith(COLLECTIVE_PREFIXES):
        return "p2p" if POINT_TO_POINT.search(name) else "collective"
    if torch.Tag.pointwise in tags:
        return "elementwise"
    if torch.Tag.reduction in tags:
        return "reduction"
    return "other"


def access_category(category: str, operands, result_shape) -> str:
    """'strided' for an elementwise op or copy with a non-contiguous or broadcast operand (one
    whose shape differs from the result's: the kernel walks it with stride 0); see CATEGORIES.
    A single element (a scalar operand) does not count, as kernels pass it by value."""
    if category in STREAMING_CATEGORIES and any(
            t.numel() > 1 and (not t.is_contiguous() or tuple(t.shape) != tuple(result_shape)) for t in operands):
        return "strided"
    return category


# Categories of row-wise kernels: each row (a softmax's, a norm's, a sum's over its last dims)
# is reduced on its own, and a CPU kernel sets each one up (Calibration.row_cost).
ROW_CATEGORIES = ("reduction", "norm")


def reduced_rows(category: str, inputs, results, dim) -> int:
    """How many independent rows a reduction or norm reduces: its smallest output's elements
    where that is smaller than its largest input (a sum's, a norm's mean per row), else (a
    softmax: one output as large as its input) the input's elements over the size of `dim`,
    the reduced dimension; 0 for other ops or where neither says."""
    if category not in ROW_CATEGORIES or not inputs or not results:
        return 0
    largest = max(inputs, key=lambda t: t.numel())
    fewest = min(t.numel() for t in results)
    if fewest < largest.numel():
        return fewest
    if isinstance(dim, int) and largest.dim() and largest.shape[dim]:
        return largest.numel() // largest.shape[dim]
    return 0


def numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def gemm_dims(name: str, shapes: list[tuple[int, ...]]) -> tuple[int, int, int, int]:
    """(batch, m, n, k) of a matmul from its input shapes; zeros where unknown."""
    if name in ("aten::mm", "aten::_scaled_mm") and len(shapes) >= 2:
        (m, k), (_, n) = shapes[0][-2:], shapes[1][-2:]
        return 1, m, n, k
    if name == "aten::addmm" and len(shapes) >= 3:
        (m, k), (_, n) = shapes[1][-2:], shapes[2][-2:]
        return 1, m, n, k
    if name in ("aten::bmm",) and len(shapes) >= 2:
        b, m, k = shapes[0][-3:]
        return b, m, shapes[1][-1], k
    if name in ("aten::baddbmm", "aten::addbmm") and len(shapes) >= 3:
        b, m, k = shapes[1][-3:]
        return b, m, shapes[2][-1], k
    return 0, 0, 0, 0


def attention_flops(batch: int, heads: int, q_len: int, kv_len: int, head_dim: int, value_dim: int,
                    causal: bool, backward: bool = False, window: int | None = None) -> float:
    """FLOPs of scaled-dot-product attention: QK^T and PV over the query-key pairs computed.

    With a causal mask the pairs above the diagonal (queries aligned to the end of the keys)
    are skipped, as fused kernels do; with a sliding `window` so are keys more than window - 1
    positions before their query.
    """
    pairs = float(q_len) * kv_len
    if causal and window is not None:
        pairs = _windowed_pairs(kv_len, window) - _windowed_pairs(max(kv_len - q_len, 0), window)
    elif causal:
        skipped = max(q_len - 1, 0) * q_len / 2.0 if kv_len >= q_len else pairs - kv_len * (kv_len + 1) / 2.0
        pairs -= skipped
    forward = 2.0 * batch * heads * pairs * (head_dim + value_dim)
    return forward * 2.5 if backward else forward


def _windowed_pairs(positions: int, window: int) -> float:
    """Pairs seen by queries at positions 0..positions-1, each seeing min(position + 1, window) keys."""
    ramp = min(positions, window)
    return ramp * (ramp + 1) / 2.0 + float(positions - ramp) * window


def registered_flops(func, args, kwargs, out) -> float | None:
    """FLOPs from torch's own flop formulas, where torch registers one for this op."""
    formula = flop_counter.flop_registry.get(func.overloadpacket)
    if formula is None:
        return None
    try:
        return float(formula(*args, **(kwargs or {}), out_val=out))
    except Exception:  # a formula that cannot read these arguments: fall back to element counts
        return None


def elementwise_flops(category: str, name: str, out_numel: int, in_numel: int) -> float:
    if category in ("copy", "gather", "memcpy", "other", "collective", "p2p"):
        return 0.0
    if name in SOFTMAX_OPS:
        return _FLOPS_PER_ELEMENT["softmax"] * out_numel
    per_element = _FLOPS_PER_ELEMENT.get(category, 1.0)
    # a reduction does its work over its input, an elementwise op over its output
    return per_element * (in_numel if category == "reduction" else out_numel)
