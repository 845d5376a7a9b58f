"""optax_swr: Soft Weight Rescaling (SWR) as an optax gradient transformation.

Chain it after any optimizer::

    tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=1e-3))
"""

from optax_swr import baselines
from optax_swr import metrics
from optax_swr._batch_stats import sync_batch_stats
from optax_swr._batch_stats import sync_nnx_batch_stats
from optax_swr._proportional import check_proportional
from optax_swr._proportional import ProportionalityReport
from optax_swr._swr import LowPrecisionWarning
from optax_swr._swr import reset_reference_norms
from optax_swr._swr import swr
from optax_swr._swr import SWRState
from optax_swr._tracing import layers_from_linen
from optax_swr._tracing import layers_from_nnx
from optax_swr._tracing import NotAChainWarning

__version__ = "0.1.0"

__all__ = (
    "LowPrecisionWarning",
    "NotAChainWarning",
    "ProportionalityReport",
    "SWRState",
    "baselines",
    "check_proportional",
    "layers_from_linen",
    "layers_from_nnx",
    "metrics",
    "reset_reference_norms",
    "swr",
    "sync_batch_stats",
    "sync_nnx_batch_stats",
)
