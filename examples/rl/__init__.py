"""Plasticity in deep RL: SWR in a fully jitted PPO agent on gymnax.

``ppo`` is the agent, its training function and the script
(``python -m examples.rl.ppo``); ``plot`` draws the JSON it writes. Needs the
[rl] extra (gymnax).
"""
