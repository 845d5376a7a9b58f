"""The model zoo of the SWR paper, in Flax Linen and NNX.

``linen`` and ``nnx`` build the same models with the same layer names;
``shapes`` holds what they share (model names, widths, shape arithmetic).
"""
