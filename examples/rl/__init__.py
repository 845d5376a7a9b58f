"""Plasticity in deep RL: SWR in a fully jitted PPO agent on gymnax.

The agent: ``config`` (what a run is set with, and its flags), ``envs``
(gymnax), ``models`` (the actor-critic network), ``agent`` (its optimizer
and state), ``train`` (``make_train``: rollout, loss, updates) and
``records`` (what the scripts write to JSON). The protocols, each a script:
``ppo`` (``python -m examples.rl.ppo``: methods on one environment) and
``continual`` (continual MinAtar); ``plot`` and ``continual_report`` draw
and tabulate their JSON. Needs the [rl] extra (gymnax).
"""
