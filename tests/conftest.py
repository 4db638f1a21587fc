from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (the ../shared/data folder beside the repo)")
    return SHARED_DATA


@pytest.fixture
def lps_head_dir(shared_data) -> Path:
    path = shared_data / "lps_head"
    if not (path / "head.obj").is_file():
        pytest.skip(f"LPS head scan not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_head():
    from headforge.assets.sample_head import load_sample_head

    return load_sample_head()


@pytest.fixture(scope="session")
def tiny_capture_dir(tmp_path_factory, sample_head):
    """The sample head rendered from 20 sphere views at 64 px (every 5th view held out)."""
    from headforge.geometry.camera_rigs import RigConfig, RigKind
    from headforge.stages.render_capture import RenderCaptureConfig, render_capture

    out = tmp_path_factory.mktemp("captures") / "tiny"
    cfg = RenderCaptureConfig(rig=RigConfig(kind=RigKind.SPHERE, num_views=20, resolution=64), head_frame=None,
                              test_every=5)
    render_capture(sample_head.mesh, cfg, out, progress=False)
    return out
