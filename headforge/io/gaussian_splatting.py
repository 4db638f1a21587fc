"""The ``KHR_gaussian_splatting`` mesh primitive (Khronos; facts from its README).

Checked against the newest README in KhronosGroup/glTF (commit 63770cc, 2026-04-15, "Editorial review";
its status line still reads "Release Candidate"). A POINTS primitive whose attributes are ``POSITION``
(splat centres), ``KHR_gaussian_splatting:ROTATION`` (VEC4 unit quaternions, glTF's xyzw order; float or
normalized signed byte/short), ``:SCALE`` (VEC3, linear, not logs, never negative; float or unsigned
byte/short, normalized or not), ``:OPACITY`` (SCALAR in [0, 1], after the sigmoid; float or normalized
unsigned byte/short) and ``:SH_DEGREE_l_COEF_n`` (float VEC3 RGB per coefficient, n = 0..2l for
m = -l..l; degree 0 is required, a degree needs all lower ones and all its own coefficients; the 3DGS
basis with its Condon-Shortley signs, so headforge's coefficients are stored unchanged). The extension
object needs ``kernel`` ("ellipse") and ``colorSpace`` ("srgb_rec709_display" or "lin_rec709_display");
``projection`` ("perspective") and ``sortingMethod`` ("cameraDistance") are optional, with those
defaults, and are written explicitly, as in the spec's example.

Axes: glTF's +y up, +z the front of the asset, +x its left, which is headforge's head frame, so splats
are stored unchanged (the spec recommends training in glTF's frame). Node transforms apply to the means
and covariances and SH should be rotated with them; headforge writes none, and its reader refuses splat
meshes under a node transform rather than ignore it.

``COLOR_0`` is the optional fallback for viewers without the extension: clamp(0.5 + C0 * SH0) with
the opacity as alpha; glTF's COLOR_0 is linear, so an sRGB colour space is decoded to linear first.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from headforge.io.gltf import GltfBuilder
from headforge.io.gltf_types import AccessorType, BufferTarget, Primitive, PrimitiveMode, SplatColorSpace, SplatKernel

KHR_GAUSSIAN_SPLATTING = "KHR_gaussian_splatting"
SH_C0 = 0.28209479177387814
ROTATION = f"{KHR_GAUSSIAN_SPLATTING}:ROTATION"
SCALE = f"{KHR_GAUSSIAN_SPLATTING}:SCALE"
OPACITY = f"{KHR_GAUSSIAN_SPLATTING}:OPACITY"


class SplatProjection(StrEnum):
    PERSPECTIVE = "perspective"


class SplatSortingMethod(StrEnum):
    CAMERA_DISTANCE = "cameraDistance"  # back to front by distance from the camera position (not view depth)


def extension_problem(ext: object) -> str | None:
    """What is wrong with a primitive's extension object for a reader of the ellipse kernel, or None."""
    if not isinstance(ext, dict):
        return f"the {KHR_GAUSSIAN_SPLATTING} object is not a JSON object"
    missing = [key for key in ("kernel", "colorSpace") if key not in ext]
    if missing:
        return f"the {KHR_GAUSSIAN_SPLATTING} object lacks the required {', '.join(missing)}"
    checks = (("kernel", SplatKernel, None), ("colorSpace", SplatColorSpace, None),
              ("projection", SplatProjection, SplatProjection.PERSPECTIVE),
              ("sortingMethod", SplatSortingMethod, SplatSortingMethod.CAMERA_DISTANCE))
    for key, kind, default in checks:
        value = ext.get(key, default)
        if value not in set(kind):
            return f"{KHR_GAUSSIAN_SPLATTING} {key} {value!r} is not one headforge knows ({[str(v) for v in kind]})"
    return None


def sh_attribute_names(num_coefficients: int) -> list[str]:
    """Semantics of the first ``num_coefficients`` (1, 4, 9 or 16) SH coefficients, in storage order."""
    degree = round(num_coefficients ** 0.5) - 1
    if (degree + 1) ** 2 != num_coefficients or not 0 <= degree <= 3:
        raise ValueError(f"{num_coefficients} SH coefficients is not a full degree 0..3")
    return [f"{KHR_GAUSSIAN_SPLATTING}:SH_DEGREE_{d}_COEF_{n}" for d in range(degree + 1) for n in range(2 * d + 1)]


def extension_attribute_names(num_coefficients: int) -> list[str]:
    """Every extension-defined semantic a primitive with this many SH coefficients carries."""
    return [ROTATION, SCALE, OPACITY, *sh_attribute_names(num_coefficients)]


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def add_gaussian_splats(builder: GltfBuilder, positions: np.ndarray, rotations_xyzw: np.ndarray,
                        scales: np.ndarray, opacities: np.ndarray, sh: np.ndarray, *,
                        color_space: SplatColorSpace = SplatColorSpace.SRGB_REC709_DISPLAY,
                        kernel: SplatKernel = SplatKernel.ELLIPSE, fallback_color: bool = True) -> Primitive:
    """Add the accessors of N splats and return their POINTS primitive.

    positions [N, 3], rotations_xyzw [N, 4] (unit), scales [N, 3] (linear, >= 0), opacities [N] in
    [0, 1], sh [N, K, 3] raw coefficients (K = 1, 4, 9, 16). All float32.
    """
    n = len(positions)
    arrays = {"positions": positions, "rotations_xyzw": rotations_xyzw, "scales": scales, "opacities": opacities,
              "sh": sh}
    for label, a in arrays.items():
        if a.dtype != np.float32 or len(a) != n or not np.isfinite(a).all():
            raise ValueError(f"{label} must be finite float32 with {n} rows")
    if np.abs(np.linalg.norm(rotations_xyzw, axis=1) - 1).max() > 1e-5:
        raise ValueError("rotations must be unit quaternions")
    if scales.min() < 0 or opacities.min() < 0 or opacities.max() > 1:
        raise ValueError("scales must be >= 0 and opacities in [0, 1]")
    vertex = BufferTarget.ARRAY_BUFFER
    attributes = {"POSITION": builder.add_accessor(positions, AccessorType.VEC3, target=vertex, min_max=True)}
    if fallback_color:
        rgb = np.clip(0.5 + SH_C0 * sh[:, 0], 0.0, 1.0)
        if color_space is SplatColorSpace.SRGB_REC709_DISPLAY:
            rgb = srgb_to_linear(rgb)
        color = np.concatenate([rgb, opacities[:, None]], 1).astype(np.float32)
        attributes["COLOR_0"] = builder.add_accessor(color, AccessorType.VEC4, target=vertex)
    attributes[ROTATION] = builder.add_accessor(rotations_xyzw, AccessorType.VEC4, target=vertex)
    attributes[SCALE] = builder.add_accessor(scales, AccessorType.VEC3, target=vertex)
    attributes[OPACITY] = builder.add_accessor(opacities, AccessorType.SCALAR, target=vertex)
    for i, name in enumerate(sh_attribute_names(sh.shape[1])):
        attributes[name] = builder.add_accessor(np.ascontiguousarray(sh[:, i]), AccessorType.VEC3, target=vertex)
    ext = {"kernel": kernel.value, "colorSpace": color_space.value, "projection": SplatProjection.PERSPECTIVE.value,
           "sortingMethod": SplatSortingMethod.CAMERA_DISTANCE.value}
    builder.use_extension(KHR_GAUSSIAN_SPLATTING)
    return Primitive(attributes, mode=PrimitiveMode.POINTS, extensions={KHR_GAUSSIAN_SPLATTING: ext})
