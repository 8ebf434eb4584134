"""Shared fixtures: one Ray instance for the whole session (start-up costs seconds), and a
small synthetic corpus sharded once and reused by every test that needs real shards."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest
import soundfile as sf

from sssl_dist.driver.ray_start import keep_ray_local, start_private_ray

# The suite's Ray is started as every command starts its own (ray_start.py): private, on
# loopback only. Ray reads that setting when it is imported, so it is made here, first.
keep_ray_local()
# Ray runs with token authentication on, as `ray.init` runs it for users in Ray 2.60. The
# session's token is held in the environment (Ray's workers and the `sssl` subprocesses inherit
# it), so the tests neither read nor write the user's ~/.ray/auth_token.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        start_private_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def tone(seconds: float, sr: int = 22050, freq: float = 440.0, stereo: bool = False):
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return np.stack([y, y], 1) if stereo else y


def write_audio(path, seconds=6.0, sr=22050, stereo=False, freq=440.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr, freq, stereo), sr)
    return path


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory, ray_session):
    """24 synthetic songs in the 4Q layout with per-second truth, sharded once."""
    from shards.synth import SynthConfig
    from shards.write import shard_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    synth = SynthConfig(n_songs=24, seed=7, max_duration_s=30.0)
    return root / "corpus", shard_synthetic(
        root / "corpus", root / "shards", synth, songs_per_shard=5, progress=False
    )


@pytest.fixture(scope="session")
def corpus(synthetic):
    return synthetic[0]


@pytest.fixture(scope="session")
def shard_dir(synthetic):
    return synthetic[1].root


def alias_bomb(key: str = "tau") -> str:
    """517 bytes that stand for 10^9 values: each line repeats the one before ten times."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    lines.append(f"{key}: [" + ",".join(["*a8"] * 10) + "]")
    return "\n".join(lines) + "\n"
