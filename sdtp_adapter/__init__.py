"""sdtp_adapter: Saliency-driven Dynamic Token Pruning adapters for transformers decoders."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public names are imported on first access (PEP 562): ``import sdtp_adapter.cli`` or ``.zoo`` must not
# pull in torch and transformers, so that ``sdtp --help`` prints at once.
_LAZY = {
    "SDTPConfig": ".config",
    "SDTPModel": ".model",
    "get_sdtp_model": ".model",
    "SDTPCache": ".pruning.cache",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .config import SDTPConfig
    from .model import SDTPModel, get_sdtp_model
    from .pruning.cache import SDTPCache


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sdtp_adapter' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["SDTPConfig", "SDTPModel", "SDTPCache", "get_sdtp_model", "__version__"]
