"""sdtp_adapter: Saliency-driven Dynamic Token Pruning adapters for transformers decoders."""

__version__ = "0.1.0"

from .config import SDTPConfig  # noqa: E402
from .model import SDTPModel, get_sdtp_model  # noqa: E402
from .pruning.cache import SDTPCache  # noqa: E402

__all__ = ["SDTPConfig", "SDTPModel", "SDTPCache", "get_sdtp_model", "__version__"]
