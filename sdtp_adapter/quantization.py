"""Guards for bitsandbytes 4-bit bases on CPU.

bitsandbytes (0.50) repacks a ``Linear4bit`` weight into a CPU-optimised layout on the first eval
forward without gradients (on CPUs with AVX512-BF16). That layout has no autograd kernel, so a later
backward through the layer silently produces wrong gradients (only a warning is printed), and the
conversion rounds the block scales (``absmax``) to bf16, so converting back is not exact. SDTP's
saliency and training passes backpropagate through the frozen base, so:

- ``disable_cpu_repacking`` (run when SDTP attaches) switches repacking off for each module instance
  (``support_avx512bf16_for_cpu`` is an attribute of the module; nothing in the library is patched);
- ``prepare_4bit_for_backward`` (run before every backward pass) converts weights that were repacked
  before SDTP attached back to the autograd-capable layout and warns that their scales were rounded.
"""

from __future__ import annotations

import sys
import warnings

from torch import nn


def _linear4bit_modules(model: nn.Module) -> list[nn.Module]:
    if "bitsandbytes" not in sys.modules:  # never imported: the model cannot hold its layers
        return []
    from bitsandbytes.nn import Linear4bit

    return [m for m in model.modules() if isinstance(m, Linear4bit)]


def disable_cpu_repacking(model: nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights on eval forwards; returns the modules touched.

    Costs the faster packed CPU inference kernel; keeps the weights exact and trainable through.
    """
    modules = _linear4bit_modules(model)
    for module in modules:
        module.support_avx512bf16_for_cpu = False
    return len(modules)


def prepare_4bit_for_backward(model: nn.Module) -> int:
    """Convert repacked ``Linear4bit`` weights back so gradients flow; returns how many were converted."""
    restored = 0
    for module in _linear4bit_modules(model):
        module.support_avx512bf16_for_cpu = False
        state = getattr(module.weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            module.weight.data, module.weight.quant_state = _convert_weight_packed_for_cpu_inverse(module.weight.data, state)
            restored += 1
    if restored:
        warnings.warn(
            f"{restored} bitsandbytes 4-bit layers had been repacked for CPU inference before SDTP was attached; "
            "they were converted back so gradients flow, but their block scales are now rounded to bf16. "
            "Attach SDTP before running the base model to keep the weights exact.",
            stacklevel=2,
        )
    return restored
