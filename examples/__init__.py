"""Examples of optax_swr; run each as ``python -m examples.<module>``.

Laid out as flax's examples are: ``models/`` (the model zoo, Linen and NNX),
``train/`` (the training loops and their shared step), ``paper/`` (the SWR
paper's protocols, their results and figures); the demo, the data sets, the
sharded example and the Colab notebook sit here at the top.
"""
