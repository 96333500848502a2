"""Agents that act in learned simulators and are judged on physics, installed as
``wm_envs.agents``, one readable file each: scripted policies of graded skill
(``scripted``: the ladder ``wm-envs transfer`` runs) and MPPI in a world model's latent
space (``planner``).
"""
