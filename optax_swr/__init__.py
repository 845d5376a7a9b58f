"""optax_swr: Soft Weight Rescaling (SWR) as an optax gradient transformation.

Chain it after any optimizer::

    tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=1e-3))
"""

from optax_swr._swr import reset_reference_norms
from optax_swr._swr import swr
from optax_swr._swr import SWRState

__version__ = "0.1.0"

__all__ = (
    "SWRState",
    "reset_reference_norms",
    "swr",
)
