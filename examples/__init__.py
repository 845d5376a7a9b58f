"""Examples of optax_swr; run each as ``python -m examples.<module>``.

Laid out as flax's examples are: ``models/`` (the model zoo, Linen and NNX),
``train/`` (the training loops and their shared step), ``paper/`` (the SWR
paper's protocols, their results and figures), ``rl/`` (PPO and continual
RL); the demo, the data sets, the sharded example and the Colab notebook sit
here at the top, with what every experiment shares: ``methods`` (the registry
of methods: name -> optimizer and intervention) and ``cli`` (common flags,
their checks, versions and the JSON writer).
"""
