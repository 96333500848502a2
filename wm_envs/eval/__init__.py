"""Measuring learned simulators: image and state metrics, paired physics-vs-learned runs."""
