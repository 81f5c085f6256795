"""MDPT: Modular Diffusion Policy Training.

Guidance (value estimators) and diffusion policies are separate modules that can be trained
jointly or guidance-first, saved apart and recombined at inference.
"""

__version__ = "0.1.0"
