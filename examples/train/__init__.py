"""Training loops with Adam and SWR: one per API.

``linen`` (a ``TrainState`` with BatchNorm statistics; ``make_train_step``,
the Linen step the paper's engine and the benchmarks also use) and ``nnx``
(``nnx.Optimizer``); ``common`` holds their flags, optimizer and history.
``equinox`` trains an Equinox CNN with ``eqx.filter_jit`` and
``optax_swr.layers_from_equinox``.
"""
