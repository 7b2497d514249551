"""Test configuration: float64 is enabled for the whole suite so that gradient checks can reach
1e-7; tests that exercise float32 create float32 arrays explicitly."""

import jax

jax.config.update("jax_enable_x64", True)
