# Copyright 2026 The optax_swr Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""optax_swr: Soft Weight Rescaling (SWR) as an optax gradient transformation.

Chain it after any optimizer::

    tx = optax.chain(optax.adam(1e-3), optax_swr.swr(coef=1e-3))
"""

from optax_swr import baselines
from optax_swr import metrics
from optax_swr._batch_stats import sync_batch_stats
from optax_swr._equinox import layers_from_equinox
from optax_swr._equinox import sync_equinox_batch_stats
from optax_swr._flax import apply_gradients
from optax_swr._flax import layers_from_linen
from optax_swr._flax import layers_from_nnx
from optax_swr._flax import rescale_nnx
from optax_swr._flax import rescale_train_state
from optax_swr._flax import sync_nnx_batch_stats
from optax_swr._flax import update_nnx
from optax_swr._layers import Layer
from optax_swr._layers import Layers
from optax_swr._layers import by_layer
from optax_swr._layers import find_layers
from optax_swr._proportional import ProportionalityReport
from optax_swr._proportional import check_proportional
from optax_swr._rescale import NotFusedWarning
from optax_swr._rescale import rescale_params
from optax_swr._rescale import update_and_apply
from optax_swr._swr import LowPrecisionWarning
from optax_swr._swr import SWRState
from optax_swr._swr import reset_reference_norms
from optax_swr._swr import swr
from optax_swr._tracing import ConstrainedLayersWarning
from optax_swr._tracing import NotAChainWarning

__version__ = "0.1.0"

__all__ = (
  "ConstrainedLayersWarning",
  "Layer",
  "Layers",
  "LowPrecisionWarning",
  "NotAChainWarning",
  "NotFusedWarning",
  "ProportionalityReport",
  "SWRState",
  "apply_gradients",
  "baselines",
  "by_layer",
  "check_proportional",
  "find_layers",
  "layers_from_equinox",
  "layers_from_linen",
  "layers_from_nnx",
  "metrics",
  "rescale_nnx",
  "rescale_params",
  "rescale_train_state",
  "reset_reference_norms",
  "swr",
  "sync_batch_stats",
  "sync_equinox_batch_stats",
  "sync_nnx_batch_stats",
  "update_and_apply",
  "update_nnx",
)
