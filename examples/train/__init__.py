"""Training loops with Adam and SWR: one per Flax API.

``linen`` (a ``TrainState`` with BatchNorm statistics; ``make_train_step``,
the Linen step the paper's engine and the benchmarks also use) and ``nnx``
(``nnx.Optimizer``); ``common`` holds their flags, optimizer and history.
"""
