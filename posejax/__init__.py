"""posejax: four formulations of 2D human pose estimation on one backbone and one pipeline."""

from posejax.xla_flags import apply_cpu_defaults

# Before any JAX computation (JAX reads XLA_FLAGS when it starts a backend): multi-threaded
# CPU convolutions, 1.2-1.5x faster train steps on 2 cores (posejax/xla_flags.py).
apply_cpu_defaults()

__version__ = "0.1.0"
