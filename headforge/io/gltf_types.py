"""glTF 2.0 closed sets and the typed parts a document is built from.

Numeric codes that glTF stores as JSON integers (component types, buffer-view targets, primitive
modes, sampler filters and wraps) are ``IntEnum``s so that they serialise as the integers the format
requires; every string-valued closed set is a ``StrEnum``. Matrices are given in the mathematical
(row-major) layout, ``M @ column_vector``; the builder writes glTF's column-major order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class ComponentType(enum.IntEnum):
    BYTE = 5120
    UNSIGNED_BYTE = 5121
    SHORT = 5122
    UNSIGNED_SHORT = 5123
    UNSIGNED_INT = 5125
    FLOAT = 5126

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_DTYPES[self])

    @classmethod
    def of(cls, dtype: np.dtype) -> ComponentType:
        """The component type that stores ``dtype`` exactly (no silent casts)."""
        for code, name in _DTYPES.items():
            if np.dtype(dtype) == np.dtype(name):
                return code
        raise TypeError(f"glTF has no component type for {np.dtype(dtype)}; cast to float32, uint8, int8, "
                        "uint16, int16 or uint32 first")


_DTYPES = {ComponentType.BYTE: "<i1", ComponentType.UNSIGNED_BYTE: "<u1", ComponentType.SHORT: "<i2",
           ComponentType.UNSIGNED_SHORT: "<u2", ComponentType.UNSIGNED_INT: "<u4", ComponentType.FLOAT: "<f4"}


class AccessorType(enum.StrEnum):
    SCALAR = "SCALAR"
    VEC2 = "VEC2"
    VEC3 = "VEC3"
    VEC4 = "VEC4"
    MAT2 = "MAT2"
    MAT3 = "MAT3"
    MAT4 = "MAT4"

    @property
    def shape(self) -> tuple[int, ...]:  # element shape of the numpy array behind one accessor element
        return {"SCALAR": (), "VEC2": (2,), "VEC3": (3,), "VEC4": (4,), "MAT2": (2, 2), "MAT3": (3, 3),
                "MAT4": (4, 4)}[self.value]

    @property
    def width(self) -> int:  # number of components
        return int(np.prod(self.shape, dtype=np.int64))


class BufferTarget(enum.IntEnum):
    ARRAY_BUFFER = 34962  # vertex attributes
    ELEMENT_ARRAY_BUFFER = 34963  # indices


class PrimitiveMode(enum.IntEnum):
    POINTS = 0
    LINES = 1
    LINE_LOOP = 2
    LINE_STRIP = 3
    TRIANGLES = 4
    TRIANGLE_STRIP = 5
    TRIANGLE_FAN = 6


class AlphaMode(enum.StrEnum):
    OPAQUE = "OPAQUE"
    MASK = "MASK"
    BLEND = "BLEND"


class Interpolation(enum.StrEnum):
    LINEAR = "LINEAR"
    STEP = "STEP"
    CUBICSPLINE = "CUBICSPLINE"


class AnimationPath(enum.StrEnum):
    TRANSLATION = "translation"
    ROTATION = "rotation"  # xyzw unit quaternions
    SCALE = "scale"
    WEIGHTS = "weights"  # morph-target weights: output holds num_targets values per keyframe


class MagFilter(enum.IntEnum):
    NEAREST = 9728
    LINEAR = 9729


class MinFilter(enum.IntEnum):
    NEAREST = 9728
    LINEAR = 9729
    NEAREST_MIPMAP_NEAREST = 9984
    LINEAR_MIPMAP_NEAREST = 9985
    NEAREST_MIPMAP_LINEAR = 9986
    LINEAR_MIPMAP_LINEAR = 9987


class Wrap(enum.IntEnum):
    CLAMP_TO_EDGE = 33071
    MIRRORED_REPEAT = 33648
    REPEAT = 10497


@dataclass(frozen=True)
class Sampler:
    mag_filter: MagFilter = MagFilter.LINEAR
    min_filter: MinFilter = MinFilter.LINEAR
    wrap_s: Wrap = Wrap.REPEAT
    wrap_t: Wrap = Wrap.REPEAT


@dataclass(frozen=True)
class Material:
    """PBR metallic-roughness; ``base_color_texture`` is a texture index (TEXCOORD_0)."""

    name: str | None = None
    base_color_factor: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    base_color_texture: int | None = None
    metallic_factor: float = 1.0
    roughness_factor: float = 1.0
    alpha_mode: AlphaMode = AlphaMode.OPAQUE
    alpha_cutoff: float | None = None  # only with AlphaMode.MASK (glTF's default there is 0.5)
    double_sided: bool = False


@dataclass(frozen=True)
class Primitive:
    """Attribute semantic -> accessor index; ``targets`` are morph targets (semantic -> accessor)."""

    attributes: dict[str, int]
    indices: int | None = None
    mode: PrimitiveMode = PrimitiveMode.TRIANGLES
    material: int | None = None
    targets: tuple[dict[str, int], ...] = ()
    extensions: dict[str, dict] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    """Either TRS (translation, rotation xyzw, scale) or a 4x4 ``matrix`` (row-major maths layout)."""

    name: str | None = None
    mesh: int | None = None
    skin: int | None = None
    children: tuple[int, ...] = ()
    translation: tuple[float, float, float] | None = None
    rotation: tuple[float, float, float, float] | None = None
    scale: tuple[float, float, float] | None = None
    matrix: np.ndarray | None = None  # [4, 4]


@dataclass(frozen=True)
class AnimationChannel:
    """One animated property: keyframe ``times`` [K] (seconds, increasing) and ``values``.

    ``values`` is [K, 3] for translation/scale, [K, 4] (xyzw) for rotation, [K, T] for weights
    (T morph targets); CUBICSPLINE needs (in-tangent, value, out-tangent) per key: [K, 3, ...].
    """

    node: int
    path: AnimationPath
    times: np.ndarray  # [K] float32
    values: np.ndarray
    interpolation: Interpolation = Interpolation.LINEAR


class SplatColorSpace(enum.StrEnum):
    """``KHR_gaussian_splatting`` colour spaces of the reconstructed splat colour."""

    SRGB_REC709_DISPLAY = "srgb_rec709_display"
    LIN_REC709_DISPLAY = "lin_rec709_display"


class SplatKernel(enum.StrEnum):
    ELLIPSE = "ellipse"
