"""Experiment drivers, configs and results for coopt-flower."""
