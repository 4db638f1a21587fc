"""The rig sheet (headforge/viz/rig_sheet.py, ``headforge rig-sheet``): tile counts and sizes, a moving shape changes
its tile where it moves (the subject's left on the image's right) while a missing all-zero shape renders exactly as
the neutral, the command writes the PNG and refuses bad rig specs, and on the real ICT-FaceKit jawOpen moves the
lower face."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from scipy.spatial import ConvexHull

import headforge.assets.rigs as sources  # the module the command loads rigs through
import headforge.viz.rig_sheet as rs
from headforge.assets.rigs import load_rig
from headforge.captures.images import read_image
from headforge.cli import main
from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, Region, affine_regressor
from headforge.representations.rig.sources import RigSource, RigSpec, parse_rig_spec

ICT = SHARED_DATA / "ict_facekit"
TILE = 64
CFG = rs.RigSheetConfig(tile=TILE, columns=4)


def sphere_rig() -> HeadRig:
    """A 10 cm ball: jawOpen drops the lower front 1 cm, eyeBlinkLeft pushes the upper front on +x (the subject's
    left) in 5 mm; every other shape is missing (all zeros). The lower front is skinned to the jaw."""
    n = 400
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r, phi = torch.sqrt(1 - y * y), i * math.pi * (3 - math.sqrt(5))
    v = torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], 1) * 0.1  # [V, 3] Fibonacci sphere
    faces = torch.from_numpy(ConvexHull(v.numpy()).simplices.astype(np.int64))
    normal = torch.linalg.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    flip = (normal * v[faces].mean(1)).sum(1) < 0  # counter-clockwise seen from outside
    faces[flip] = faces[flip][:, [0, 2, 1]]
    expr = torch.zeros(NUM_ARKIT, n, 3, dtype=torch.float64)
    lower = (v[:, 1] < -0.03) & (v[:, 2] > 0)
    expr[ARKIT_NAMES.index("jawOpen"), lower, 1] = -0.01
    upper_left = (v[:, 0] > 0.02) & (v[:, 1] > 0.02) & (v[:, 2] > 0)
    expr[ARKIT_NAMES.index("eyeBlinkLeft"), upper_left, 2] = 0.005
    present = expr.abs().flatten(1).amax(1) > 0
    joints = torch.tensor([[0, -0.1, 0], [0, -0.08, 0], [0, -0.02, 0], [0, -0.03, 0.02], [0.03, 0.02, 0.07],
                           [-0.03, 0.02, 0.07]], dtype=torch.float64)
    weights = torch.zeros(n, len(JOINTS), dtype=torch.float64)
    weights[:, JOINTS.index(Joint.HEAD)] = 1
    weights[lower] = 0
    weights[lower, JOINTS.index(Joint.JAW)] = 1
    return HeadRig(template=v, faces=faces, uvs=torch.zeros(len(faces), 3, 2, dtype=torch.float64),
                   regions=(v[:, 2] <= 0).long(), region_names=(Region.FACE_SKIN, Region.SCALP),
                   expression_basis=expr, expression_present=present,
                   joint_regressor=affine_regressor(v, joints, torch.ones(len(JOINTS), n, dtype=torch.bool)),
                   skin_weights=weights, source="sphere test rig", licence="test")


@pytest.fixture(scope="module")
def rig() -> HeadRig:
    return sphere_rig()


@pytest.fixture(scope="module")
def tiles(rig) -> dict[str, rs.SheetTile]:
    return {t.label: t for t in rs.expression_tiles(rig, CFG) + rs.pose_tiles(rig, CFG)}


def front(img: np.ndarray) -> np.ndarray:  # the front view of a face tile (the profile is on its right)
    return img[:, :img.shape[1] // 2]


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # [H, W] bool
    return np.abs(a - b).max(-1) > 0.02


def test_tile_counts_and_sizes(rig, tiles):
    assert len(rs.expression_tiles(rig, rs.RigSheetConfig(tile=16, profile=False))) == NUM_ARKIT + 1
    assert list(tiles)[:NUM_ARKIT + 1] == ["neutral", *ARKIT_NAMES]
    assert list(tiles)[NUM_ARKIT + 1:] == [p.label for p in rs.SKELETON_POSES]
    for t in tiles.values():
        assert t.image.shape == (TILE, 2 * TILE, 3) and t.image.dtype == np.float32  # two views, or the eye crop
    assert [t.label for t in tiles.values() if t.missing] == [n for n in rig.missing_expressions()]
    sheet = rs.rig_sheet(rig, CFG)
    cap, gap = rs.layout(TILE)
    assert sheet.shape[1] == CFG.columns * (2 * TILE + gap)
    expr_rows = math.ceil((NUM_ARKIT + 1) / CFG.columns)
    pose_rows = math.ceil(len(rs.SKELETON_POSES) / CFG.columns)
    assert sheet.shape[0] > (expr_rows + pose_rows) * (TILE + cap + gap)
    assert sheet.min() >= 0 and sheet.max() <= 1


def test_moving_shapes_change_their_tile_where_they_move(tiles):
    neutral = front(tiles["neutral"].image)
    jaw = changed(front(tiles["jawOpen"].image), neutral)
    h, w = jaw.shape
    assert jaw[h // 2:].sum() > 20 and jaw[h // 2:].sum() > 4 * jaw[:h // 2].sum()  # the lower half
    blink = changed(front(tiles["eyeBlinkLeft"].image), neutral)
    assert blink[:, w // 2:].sum() > 20 and blink[:, w // 2:].sum() > 4 * blink[:, :w // 2].sum()  # subject's left
    posed = changed(front(tiles["jaw open"].image), neutral)  # the jaw joint: the lower half again
    assert posed[h // 2:].sum() > 4 * max(1, posed[:h // 2].sum())
    turned = changed(front(tiles["head turned left"].image), neutral)
    assert turned.sum() > 0.3 * (front(tiles["neutral"].image) < rs.BACKGROUND - 0.01).any(-1).sum()


def test_a_missing_shape_renders_as_the_neutral(tiles):
    missing = tiles["tongueOut"]
    assert missing.missing and not tiles["jawOpen"].missing
    np.testing.assert_array_equal(missing.image, tiles["neutral"].image)  # the all-zero row moves nothing
    cap = 12
    washed, plain = rs.labelled(missing, cap), rs.labelled(tiles["neutral"], cap)
    assert washed.shape == plain.shape == (TILE + cap, 2 * TILE, 3)
    assert washed[cap:].mean() > plain[cap:].mean() + 0.02  # greyed out toward white, with "missing" written


def test_heat_colors():
    c = rs.heat_colors(torch.tensor([[0.0, 5.0, 10.0, 50.0]]), 10.0)[0]
    assert torch.allclose(c[0], torch.full((3,), rs.BASE_GREY))
    assert torch.allclose(c[2], c[3]) and not torch.allclose(c[1], c[2])  # saturates above vmax


def test_parse_rig_spec(tmp_path):
    assert parse_rig_spec(f"ict-facekit:{tmp_path}") == RigSpec(RigSource.ICT_FACEKIT, tmp_path)
    assert parse_rig_spec(f"flame:{tmp_path}") == RigSpec(RigSource.FLAME, tmp_path)
    for bad, words in ((f"bogus:{tmp_path}", "unknown rig source"),
                       (f"flame:{tmp_path}/none.pkl", "does not exist"), ("ict-facekit", "names no path"),
                       ("ict-facekit:", "names no path"), (f"ict-facekit:{tmp_path}/nothing", "does not exist")):
        with pytest.raises(InputError, match=words) as err:
            parse_rig_spec(bad)
        assert "ict-facekit:PATH, flame:PATH" in str(err.value)


def run_cli(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_writes_the_sheet_and_refuses_bad_input(rig, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sources, "load_rig", lambda spec: rig)  # the command loads through the module: any source
    out = tmp_path / "sheet.png"
    code, err = run_cli(capsys, "rig-sheet", f"ict-facekit:{tmp_path}", "--out", out, "--size", 64)
    assert code == 0, err
    img = read_image(out)
    assert img.shape[1] == 6 * (2 * 64 + rs.layout(64)[1]) and img.shape[0] > 10 * 64
    before = out.read_bytes()
    code, err = run_cli(capsys, "rig-sheet", f"ict-facekit:{tmp_path}", "--out", out, "--size", 64)
    assert code == 2 and "already exists" in err and out.read_bytes() == before
    code, err = run_cli(capsys, "rig-sheet", f"ict-facekit:{tmp_path}", "--out", out, "--size", 80, "--overwrite")
    assert code == 0 and read_image(out).shape[0] > img.shape[0]
    for bad in (f"bogus:{tmp_path}", f"builtin:{tmp_path}", f"ict-facekit:{tmp_path}/missing",
                f"flame:{tmp_path}/none.pkl"):
        code, err = run_cli(capsys, "rig-sheet", bad, "--out", tmp_path / "other.png")
        assert code == 2 and "ict-facekit:PATH" in err and "Traceback" not in err
    assert not (tmp_path / "other.png").exists()


def test_real_ict_facekit_sheet():
    if not (ICT / "ict_facekit_shapes.npz").is_file():
        pytest.skip(f"ICT-FaceKit packed copy not found at {ICT} (the ../shared/data folder beside the repo)")
    rig = load_rig(parse_rig_spec(f"ict-facekit:{ICT}"))
    cfg = rs.RigSheetConfig(tile=96)
    tiles = {t.label: t for t in rs.expression_tiles(rig, cfg)}
    assert [t for t, v in tiles.items() if v.missing] == ["tongueOut"]
    neutral = front(tiles["neutral"].image)
    h, w = neutral.shape[:2]
    jaw = np.abs(front(tiles["jawOpen"].image) - neutral).sum(-1)  # [H, W]: the change, heat colour included
    assert jaw[h // 2:].sum() > 3 * jaw[:h // 2].sum() > 0  # the mouth and chin, below the face box's middle
    assert jaw[:h // 3].sum() < 0.05 * jaw.sum()  # the forehead and eyes hardly
    for side in ("Left", "Right"):  # the subject's left is on the front view's right
        moved = np.abs(front(tiles[f"eyeBlink{side}"].image) - neutral).sum(-1)
        near, far = (moved[:, w // 2:], moved[:, :w // 2]) if side == "Left" else (moved[:, :w // 2], moved[:, w // 2:])
        assert near.sum() > 2.5 * far.sum() > 0
    assert rs.pupil_mask(rig).sum() > 20
