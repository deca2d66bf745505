"""posejax: four formulations of 2D human pose estimation on one backbone and one pipeline."""

__version__ = "0.1.0"
