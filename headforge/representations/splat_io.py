"""Gaussian-splat files: graphdeco 3DGS PLY, antimatter15 ``.splat``, glTF KHR_gaussian_splatting and ``.spz``.

Axis conventions (see :mod:`headforge.representations.splat_formats`): headforge's world is the head
frame (metres, x the subject's left, +y up, face toward +z), the RUB axes of glTF and ``.spz``, so GLB
and .spz store it unchanged and open upright. PLY and ``.splat`` have no declared frame and 3DGS
viewers (SuperSplat, splat-transform, graphdeco) read them in the OpenCV world (y down, z forward), so
they are written in ``SplatFrame.OPENCV`` by default (the head turned 180 degrees about x). A PLY says
its frame in a header line ``comment headforge frame=opencv (...)`` and :func:`load_splats_ply` turns
it back; a PLY without that line (older exports, other tools) is read as is. ``.splat`` has no header:
its reader takes the frame as an argument (default OPENCV, what headforge writes). Internal files whose
values are not world values (the avatar's triangle-local ``gaussians.ply``) are written with
``frame=SplatFrame.HEAD``.

- PLY (SuperSplat, Unity GaussianSplatting, graphdeco viewers): binary little-endian float32
  ``x y z nx ny nz f_dc_0..2 f_rest_0..(3(K-1)-1) opacity scale_0..2 rot_0..3``; f_rest is
  channel-major (all R coefficients of bands 1.., then G, then B); opacity is a logit, scales are
  logs, rot is a wxyz quaternion (not necessarily normalised).
- .splat: 32 bytes per splat: position float32 x3, scale float32 x3 (linear), RGBA uint8 (colour
  = 0.5 + SH_C0 * DC, alpha = opacity), rotation uint8 x4 (wxyz, q * 128 + 128), sorted by
  decreasing scale volume x opacity. Lossy: no higher SH bands, 8-bit colour and rotation.
- GLB (KHR_gaussian_splatting), built by :mod:`headforge.io.gltf`: POINTS primitive with POSITION,
  ``KHR_gaussian_splatting:ROTATION`` (xyzw, unit), ``:SCALE`` (linear), ``:OPACITY`` (after the
  sigmoid), ``:SH_DEGREE_l_COEF_n`` (raw SH coefficients, m from -l to l); COLOR_0 carries the DC
  colour (decoded to linear, as glTF's COLOR_0 is linear) and the opacity, so viewers without the
  extension show a coloured point cloud. The reader also takes the spec's normalized-integer
  ROTATION / SCALE / OPACITY accessors.
- .spz (Niantic, versions 2 and 3): :mod:`headforge.io.spz`, wrapped in ``splat_formats``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from headforge.atomic import atomic_path
from headforge.errors import InputError
from headforge.geometry.sh import SH_C0, num_sh_bases, rgb_to_sh0, sh0_to_rgb
from headforge.io.files import read_bytes, require_finite, require_nonempty, resolve_input
from headforge.io.gaussian_splatting import (
    KHR_GAUSSIAN_SPLATTING,
    OPACITY,
    ROTATION,
    SCALE,
    add_gaussian_splats,
    extension_problem,
    sh_attribute_names,
)
from headforge.io.glb import load_glb
from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import Node, SplatColorSpace
from headforge.representations.gaussians import Splats
from headforge.representations.splat_formats import (
    FRAME_SENTENCES,
    SplatFrame,
    from_frame,
    load_splats_spz,
    save_splats_spz,
    to_frame,
)

FRAME_COMMENT = "comment headforge frame="


def _ply_fields(k: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (k - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def save_splats_ply(splats: Splats, path: str | Path, extra: dict[str, torch.Tensor] | None = None, *,
                    frame: SplatFrame = SplatFrame.OPENCV) -> Path:
    """Write the 3DGS PLY of head-frame ``splats`` in ``frame`` (default: the 3DGS viewers' OpenCV world; pass
    ``SplatFrame.HEAD`` for files whose values must stay as they are), named in a header comment. ``extra``
    adds float32 columns [N] after the standard ones (GaussianAvatars' bound splats add ``binding_0``, the
    triangle index, this way)."""
    frame = SplatFrame(frame)
    s = to_frame(splats.detach(), frame)
    n, k = len(s), s.sh.shape[1]
    op = s.opacities.double().clamp(1e-7, 1 - 1e-7)
    cols = [s.means, torch.zeros(n, 3), s.sh[:, 0], s.sh[:, 1:].transpose(1, 2).reshape(n, -1),
            torch.log(op / (1 - op))[:, None], s.scales.clamp_min(1e-30).log(), s.quats]
    for name, col in (extra or {}).items():
        if col.shape != (n,) or name in _ply_fields(k):
            raise ValueError(f"extra PLY column {name!r} must be [N] = [{n}] and not a standard name")
        if not col.dtype.is_floating_point and n and int(col.abs().max()) >= 2 ** 24:
            raise ValueError(f"extra PLY column {name!r} holds integers float32 cannot store exactly")
        cols.append(col[:, None])
    data = torch.cat([c.double().cpu() for c in cols], 1).numpy().astype("<f4")
    names = _ply_fields(k) + list(extra or {})
    header = "ply\nformat binary_little_endian 1.0\n" + f"{FRAME_COMMENT}{frame} ({FRAME_SENTENCES[frame]})\n"
    header += f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(data).tobytes())
    return Path(path)


def _ply_frame(lines: list[str], path: Path) -> SplatFrame:
    """The frame a ``comment headforge frame=...`` line names; HEAD (read as is) when there is none."""
    marks = [ln[len(FRAME_COMMENT):].split()[0] for ln in lines if ln.startswith(FRAME_COMMENT)
             and ln[len(FRAME_COMMENT):].split()]
    if len(marks) > 1 or (marks and marks[0] not in set(SplatFrame)):
        raise InputError(f"PLY header names the frame {marks} (expected one of {[str(f) for f in SplatFrame]})",
                         path=path, fix="remove or fix the 'comment headforge frame=' line")
    return SplatFrame(marks[0]) if marks else SplatFrame.HEAD


def _parse_ply_header(raw: bytes, path: Path) -> tuple[list[str], int, int, np.dtype, SplatFrame]:
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise InputError("not a PLY file (missing 'ply' magic or 'end_header')", path=path,
                         fix="export the splats as a 3DGS PLY")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt = next((ln.split()[1] for ln in lines if ln.startswith("format") and len(ln.split()) > 1), None)
    if fmt != "binary_little_endian":
        raise InputError(f"PLY format {fmt!r} is not supported", path=path,
                         fix="save the splats as binary_little_endian PLY")
    elements = [ln.split() for ln in lines if ln.startswith("element")]
    if not elements or len(elements[0]) != 3 or elements[0][1] != "vertex" or not elements[0][2].isdigit():
        raise InputError("PLY has no vertex element", path=path, fix="this is not a Gaussian-splat PLY")
    if len(elements) > 1:
        raise InputError(f"PLY has extra elements {[e[1] for e in elements[1:]]}", path=path,
                         fix="a 3DGS PLY holds only the vertex element")
    n = int(elements[0][2])
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
             "int": "<i4", "int32": "<i4", "uint": "<u4", "short": "<i2", "ushort": "<u2"}
    props = []
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["property"]:
            if len(parts) != 3 or parts[1] not in types:
                raise InputError(f"unsupported PLY property {' '.join(parts[1:])}", path=path,
                                 fix="a 3DGS PLY has scalar float properties")
            props.append((parts[2], types[parts[1]]))
    return [p[0] for p in props], n, end + len(b"end_header\n"), np.dtype(props), _ply_frame(lines, path)


def load_splats_ply(path: str | Path) -> Splats:
    """Head-frame splats of a 3DGS PLY (turned back when its header names the OpenCV frame)."""
    return load_splats_ply_extra(path, ())[0]


def load_splats_ply_extra(path: str | Path, extra: tuple[str, ...]) -> tuple[Splats, dict[str, torch.Tensor]]:
    """Read a 3DGS PLY and the named extra float columns (each [N] float64; a missing one is an error)."""
    path = Path(path)
    raw = read_bytes(path, "splat PLY")
    names, n, offset, dtype, frame = _parse_ply_header(raw, path)
    if len(raw) - offset < n * dtype.itemsize:
        raise InputError(f"PLY is truncated: header says {n} splats, data holds "
                         f"{(len(raw) - offset) // dtype.itemsize}", path=path, fix="re-export the file")
    arr = np.frombuffer(raw, dtype=dtype, count=n, offset=offset)
    require_nonempty(arr, path, "the splat PLY's vertex element (element vertex 0)",
                     fix="export a trained model; a splat file needs at least one splat")
    rest = sorted((nm for nm in names if nm.startswith("f_rest_")), key=lambda s: int(s.split("_")[-1]))
    k = 1 + len(rest) // 3
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [r for r in required if r not in names]
    if missing or len(rest) % 3 or k not in (1, 4, 9, 16):
        problem = f"missing properties {', '.join(missing)}" if missing else f"{len(rest)} f_rest values"
        raise InputError(f"not a 3DGS PLY: {problem}", path=path,
                         fix="export in the graphdeco 3DGS layout (f_dc, f_rest, opacity, scale, rot)")
    require_finite(np.stack([arr[c].astype(np.float64) for c in required + rest], 1), path, "splat PLY",
                   items="splats", item_axes=1, fix="re-export the splats; every value must be finite")
    col = lambda *keys: torch.from_numpy(np.stack([arr[c].astype(np.float32) for c in keys], 1))  # noqa: E731
    sh_rest = col(*rest).reshape(n, 3, k - 1).transpose(1, 2) if k > 1 else torch.zeros(n, 0, 3)
    quats = col("rot_0", "rot_1", "rot_2", "rot_3")
    splats = Splats(col("x", "y", "z"), quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12),
                    torch.exp(col("scale_0", "scale_1", "scale_2")),
                    torch.sigmoid(col("opacity")[:, 0]), torch.cat([col("f_dc_0", "f_dc_1", "f_dc_2")[:, None],
                                                                     sh_rest], 1))
    absent = [c for c in extra if c not in names]
    if absent:
        raise InputError(f"the PLY lacks the columns {absent}", path=path,
                         fix="this file was not written as bound Gaussians; write it with headforge avatar")
    columns = {c: torch.from_numpy(arr[c].astype(np.float64)) for c in extra}
    if any(not bool(torch.isfinite(v).all()) for v in columns.values()):
        raise InputError(f"the PLY's columns {list(extra)} hold non-finite values", path=path, fix="re-export it")
    return from_frame(splats.validate(path), frame), columns


def save_splats_dot_splat(splats: Splats, path: str | Path, *, frame: SplatFrame = SplatFrame.OPENCV) -> Path:
    """Write antimatter15's .splat of head-frame ``splats`` in ``frame`` (default: OpenCV, as its viewers read it;
    the file cannot say which, so the reader must be told)."""
    s = to_frame(splats.detach(), SplatFrame(frame))
    order = torch.argsort(-(s.scales.prod(-1) * s.opacities))
    rec = np.zeros(len(s), dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rec["pos"] = s.means[order].cpu().numpy()
    rec["scale"] = s.scales[order].cpu().numpy()
    rgba = torch.cat([sh0_to_rgb(s.sh[order, 0]), s.opacities[order, None]], 1)
    rec["rgba"] = (rgba.clamp(0, 1) * 255).round().cpu().numpy()
    q = s.quats[order] / s.quats[order].norm(dim=-1, keepdim=True)
    rec["rot"] = (q * 128 + 128).round().clamp(0, 255).cpu().numpy()
    with atomic_path(path) as tmp:
        tmp.write_bytes(rec.tobytes())
    return Path(path)


def load_splats_dot_splat(path: str | Path, max_sh_degree: int = 0, *,
                          frame: SplatFrame = SplatFrame.OPENCV) -> Splats:
    """Head-frame splats of a .splat stored in ``frame`` (default OpenCV, what headforge and 3DGS tools write)."""
    path = Path(path)
    raw = read_bytes(path, ".splat file", allow_empty=True)
    if len(raw) == 0 or len(raw) % 32:
        raise InputError(f".splat size {len(raw)} is not a positive multiple of 32 bytes", path=path,
                         fix="the file is truncated or not a .splat file")
    rec = np.frombuffer(raw, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    require_finite(np.concatenate([rec["pos"], rec["scale"]], 1), path, ".splat file", items="splats", item_axes=1,
                   fix="re-export the splats; every value must be finite")
    rgba = torch.from_numpy(rec["rgba"].astype(np.float32) / 255)
    q = (torch.from_numpy(rec["rot"].astype(np.float32)) - 128) / 128
    n = len(rec)
    sh = torch.zeros(n, num_sh_bases(max_sh_degree), 3)
    sh[:, 0] = rgb_to_sh0(rgba[:, :3])
    stored = Splats(torch.from_numpy(rec["pos"].copy()), q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12),
                    torch.from_numpy(rec["scale"].copy()), rgba[:, 3], sh).validate(path)
    return from_frame(stored, SplatFrame(frame))


def save_splats_glb(splats: Splats, path: str | Path,
                    color_space: SplatColorSpace = SplatColorSpace.SRGB_REC709_DISPLAY) -> Path:
    """One node, one ``KHR_gaussian_splatting`` POINTS primitive (float accessors), via the glTF builder."""
    s = splats.detach()
    q = s.quats / s.quats.norm(dim=-1, keepdim=True)
    f32 = lambda t: np.ascontiguousarray(t.float().cpu().numpy(), dtype=np.float32)  # noqa: E731
    builder = GltfBuilder()
    prim = add_gaussian_splats(builder, f32(s.means), f32(q[:, [1, 2, 3, 0]]), f32(s.scales), f32(s.opacities),
                               f32(s.sh), color_space=SplatColorSpace(color_space))
    node = builder.add_node(Node(name="splats", mesh=builder.add_mesh([prim], name="splats")))
    builder.add_scene([node])
    with atomic_path(path) as tmp:
        tmp.write_bytes(builder.to_glb())
    return Path(path)


def _moved_nodes(document: dict, mesh: int) -> list[int]:
    """Nodes instancing ``mesh`` whose global transform (theirs or an ancestor's) is not the identity."""
    nodes = document.get("nodes", [])
    parent = {c: i for i, nd in enumerate(nodes) for c in nd.get("children", [])}
    identity = {"matrix": [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], "translation": [0, 0, 0],
                "rotation": [0, 0, 0, 1], "scale": [1, 1, 1]}

    def moved(i: int, seen: frozenset = frozenset()) -> bool:
        if i in seen:
            return False
        own = any(key in nodes[i] and nodes[i][key] != value for key, value in identity.items())
        return own or (i in parent and moved(parent[i], seen | {i}))

    return [i for i, nd in enumerate(nodes) if nd.get("mesh") == mesh and moved(i)]


def load_splats_glb(path: str | Path) -> Splats:
    """Read the first ``KHR_gaussian_splatting`` primitive of a GLB (float or quantized accessors)."""
    path = resolve_input(path, what="splat GLB")
    glb = load_glb(path)
    prims = [(i, p) for i, m in enumerate(glb.document.get("meshes", [])) for p in m.get("primitives", [])
             if KHR_GAUSSIAN_SPLATTING in p.get("extensions", {})]
    if not prims:
        raise InputError(f"GLB has no {KHR_GAUSSIAN_SPLATTING} primitive", path=path,
                         fix="export with the KHR_gaussian_splatting extension")
    mesh, prim = prims[0]
    problem = extension_problem(prim["extensions"][KHR_GAUSSIAN_SPLATTING])
    if prim.get("mode", 4) != 0:
        problem = f"the {KHR_GAUSSIAN_SPLATTING} primitive has mode {prim.get('mode', 4)}, not POINTS (0)"
    if problem:
        raise InputError(problem, path=path, fix="export with the ellipse kernel of KHR_gaussian_splatting")
    moved = _moved_nodes(glb.document, mesh)
    if moved:
        raise InputError(f"the splat mesh sits under node transforms (nodes {moved}), which headforge does not "
                         "apply", path=path, fix="bake the node transforms into the splats before export")
    attrs = prim.get("attributes", {})

    def get(name: str) -> torch.Tensor:
        if name not in attrs:
            raise InputError(f"GLB splat primitive lacks attribute {name}", path=path, fix="re-export the file")
        try:
            data = glb.accessor(attrs[name])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"GLB accessor for {name} is malformed ({e})", path=path,
                             fix="re-export the file") from None
        return torch.from_numpy(np.asarray(data, dtype=np.float32).reshape(len(data), -1).copy())

    all_sh = sh_attribute_names(16)
    sh_names = [nm for nm in all_sh if nm in attrs]
    if len(sh_names) not in (1, 4, 9, 16) or sh_names != all_sh[:len(sh_names)]:
        raise InputError("GLB spherical harmonics bands are incomplete", path=path, fix="re-export the file")
    q = get(ROTATION)[:, [3, 0, 1, 2]]
    require_nonempty(q, path, "the GLB's splat primitive", fix="export a trained model; it needs at least one splat")
    return Splats(get("POSITION"), q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12), get(SCALE),
                  get(OPACITY)[:, 0], torch.stack([get(nm) for nm in sh_names], 1)).validate(path)


__all__ = ["SH_C0", "SplatFrame", "save_splats_ply", "load_splats_ply", "load_splats_ply_extra",
           "save_splats_dot_splat", "load_splats_dot_splat", "save_splats_glb", "load_splats_glb", "save_splats_spz",
           "load_splats_spz"]
