"""Test session setup: 8 fake CPU devices and no network, set before jax is imported."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Reference implementations (tests/oracles/) and the few modules tests share.
HERE = os.path.dirname(os.path.abspath(__file__))
for folder in ("oracles", os.path.join("unit", "train"), "e2e"):  # shared test modules
    sys.path.insert(0, os.path.join(HERE, folder))

import jax  # noqa: E402  (after XLA_FLAGS on purpose)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than ~20 s on a 2-core CPU")


@pytest.fixture(scope="session")
def n_devices():
    assert len(jax.devices()) == 8, "tests expect 8 fake CPU devices (conftest sets XLA_FLAGS)"
    return 8


@pytest.fixture(scope="module")
def mesh8(n_devices):
    """All 8 fake devices along the data axis."""
    from bstar_jax.core import mesh as mesh_lib

    return mesh_lib.make_mesh(data=-1, fsdp=1, tensor=1)


@pytest.fixture(scope="module")
def mesh1():
    """A one-device mesh, the unsharded reference."""
    from bstar_jax.core import mesh as mesh_lib

    return mesh_lib.make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1])
