"""A checkpoint written by a process with other devices restores here.

A run trained with ``distributed.cpu_devices=cores`` (2 CPU devices) or on a GPU node is
evaluated later by a process with one CPU device (``posejax.evaluate``, notebooks). Orbax
places restored arrays as they were saved unless told otherwise, which failed with "Topology
mismatch" and made the checkpoint look unreadable (so `make compare`'s evaluation found none).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

from posejax.runs.checkpoint import Checkpointer

SAVE_ON_TWO_DEVICES = """
import sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from posejax.runs.checkpoint import Checkpointer
assert jax.device_count() == 2
mesh = jax.make_mesh((2,), ("data",))
state = {"params": {"w": jnp.arange(12.0).reshape(3, 4)}, "step": jnp.int32(7)}
state = jax.device_put(state, NamedSharding(mesh, P()))
c = Checkpointer(sys.argv[1])
c.save(7, state, {"position": 3})
c.close()
"""


def test_a_checkpoint_saved_on_two_devices_restores_on_one(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    subprocess.run(
        [sys.executable, "-c", SAVE_ON_TWO_DEVICES, str(tmp_path / "ckpt")], env=env, check=True
    )
    checkpointer = Checkpointer(tmp_path / "ckpt")
    restored = checkpointer.restore_latest(None)
    assert restored is not None, "the checkpoint was taken for unreadable"
    step, state, data_state = restored
    assert step == 7 and data_state == {"position": 3}
    np.testing.assert_array_equal(state["params"]["w"], np.arange(12.0).reshape(3, 4))
    assert state["params"]["w"].sharding.device_set == {jax.local_devices()[0]}
    # Into a target placed on this process's devices (what a resumed trainer passes).
    again = checkpointer.restore_latest(jax.tree.map(np.zeros_like, state))
    np.testing.assert_array_equal(again[1]["params"]["w"], state["params"]["w"])
    checkpointer.close()
