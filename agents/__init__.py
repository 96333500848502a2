"""Agents that act in learned simulators and are judged on physics, installed as
``wm_envs.agents``: scripted policies of graded skill (``scripted``), the ladder that
``wm-envs transfer`` runs. One readable file each.
"""
