"""What pruning kept, for one prompt: ``SDTPModel.explain`` records it (``run``), ``Explanation`` holds it
(``data``), ``png`` and ``html`` draw it, ``cli`` is ``sdtp explain``.

Light on import (no torch): ``sdtp --help`` imports ``explain.cli``.
"""

from .data import Explanation

__all__ = ["Explanation"]
