"""`HeadRig`: one parametric head type for every source (ICT-FaceKit, FLAME, the built-in rig).

Conventions (see DESIGN.md):
- Positions in metres in the headforge head frame (``geometry/head_frame.py``): +y up, the face looks
  toward +z, +x is the subject's left, origin at the head centre.
- ``faces`` [F, 3] int64, counter-clockwise seen from outside; quads of a source are split into triangles.
  ``uvs`` [F, 3, 2] per face corner in the OBJ convention (u right, v up, (0, 0) bottom-left).
- The expression basis has one row per ARKit name, in ``ARKIT_NAMES`` order; ``expression_present[k]`` is
  False where the source has no such shape (that row is all zeros and must stay so).
- The skeleton is fixed (:class:`Joint`, :data:`JOINT_PARENTS`). Rest joints are ``joint_regressor @ vertices``
  (each row an affine combination of vertices, summing to 1), so joints follow the identity shape.
- Skinning weights [V, J] are non-negative and sum to 1 per vertex.
- Optional source extras: ``expression_components`` [E, V, 3], a source's own expression basis (FLAME's 100
  components) driven by ``deform(..., components=...)``; ``pose_correctives`` [J - 1, 9, V, 3], offsets per
  entry of (R_j - I) for each non-root joint (FLAME's ``posedirs``), added before skinning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import Tensor

from headforge.errors import InputError
from headforge.representations.rig.arkit import ARKIT_NAMES, NUM_ARKIT


class Region(StrEnum):
    """Labelled parts of a head rig (a vertex has exactly one)."""

    FACE_SKIN = "face_skin"
    SCALP = "scalp"
    EARS = "ears"
    NECK = "neck"
    EYES = "eyes"  # eyeballs
    EYE_SOCKETS = "eye_sockets"
    EYE_OVERLAYS = "eye_overlays"  # tear film, eye blend, occlusion shells and eyelashes
    MOUTH_INTERIOR = "mouth_interior"  # mouth socket, gums and tongue
    TEETH = "teeth"


class Joint(StrEnum):
    """The skeleton every rig shares; iteration order is the joint index."""

    ROOT = "root"
    NECK = "neck"
    HEAD = "head"
    JAW = "jaw"
    LEFT_EYE = "left_eye"  # the subject's left (+x)
    RIGHT_EYE = "right_eye"


JOINTS: tuple[Joint, ...] = tuple(Joint)
# parent index of each joint (-1 for the root); parents come before their children
JOINT_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 2, 2)


class LandmarkSet(StrEnum):
    """Named landmark conventions a rig can embed, with their point counts in :data:`LANDMARK_COUNTS`."""

    MEDIAPIPE_478 = "mediapipe478"  # MediaPipe face mesh (468 + 10 iris points)
    IBUG_68 = "ibug68"  # iBUG 300-W / Multi-PIE 68-point markup


LANDMARK_COUNTS: dict[LandmarkSet, int] = {LandmarkSet.MEDIAPIPE_478: 478, LandmarkSet.IBUG_68: 68}


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value; compare fields explicitly
class LandmarkEmbedding:
    """Landmarks fixed on the surface: point l = sum_k barycentrics[l, k] * vertex(faces[triangles[l], k])."""

    triangles: Tensor  # [L] int64 into HeadRig.faces
    barycentrics: Tensor  # [L, 3] float, rows sum to 1
    # [L] bool or None (all): a generated embedding flags the points it could not place well; fits leave the
    # others out (they are still embedded at their nearest surface point, so every index exists)
    reliable: Tensor | None = None


@dataclass(frozen=True, eq=False)
class HeadRig:
    template: Tensor  # [V, 3] metres, head frame
    faces: Tensor  # [F, 3] int64
    uvs: Tensor  # [F, 3, 2] per corner, OBJ convention
    regions: Tensor  # [V] int64 into region_names
    region_names: tuple[Region, ...]
    expression_basis: Tensor  # [52, V, 3] metres per unit weight, rows in ARKIT_NAMES order
    expression_present: Tensor  # [52] bool
    joint_regressor: Tensor  # [J, V] affine rows (sum to 1): rest joints = joint_regressor @ vertices
    skin_weights: Tensor  # [V, J] >= 0, rows sum to 1
    identity_basis: Tensor | None = None  # [K, V, 3] metres per unit coefficient
    expression_components: Tensor | None = None  # [E, V, 3] the source's own expression basis (FLAME's 100)
    pose_correctives: Tensor | None = None  # [J - 1, 9, V, 3] metres per entry of (R_j - I), joints 1.. in order
    landmarks: Mapping[LandmarkSet, LandmarkEmbedding] = field(default_factory=dict)
    source: str = ""  # where the rig came from (file or generator)
    licence: str = ""  # the source data's licence

    def __post_init__(self):
        V = self._check_shape("template", self.template, (None, 3), float_ok=True)
        F = self._check_shape("faces", self.faces, (None, 3), integer=True)
        if F == 0 or V == 0:
            self._fail("has no vertices or no faces")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= V:
            self._fail("faces index vertices that do not exist")
        self._check_shape("uvs", self.uvs, (F, 3, 2), float_ok=True)
        self._check_shape("regions", self.regions, (V,), integer=True)
        unknown = [str(r) for r in self.region_names if r not in set(Region)]
        if unknown:
            self._fail(f"unknown region names {unknown} (known: {', '.join(Region)})")
        names = tuple(Region(r) for r in self.region_names)
        object.__setattr__(self, "region_names", names)
        if len(set(names)) != len(names):
            self._fail(f"region names repeat: {names}")
        if int(self.regions.min()) < 0 or int(self.regions.max()) >= len(names):
            self._fail(f"region labels must index the {len(names)} region names")
        self._check_shape("expression_basis", self.expression_basis, (NUM_ARKIT, V, 3), float_ok=True)
        self._check_shape("expression_present", self.expression_present, (NUM_ARKIT,))
        if self.expression_present.dtype != torch.bool:
            self._fail("expression_present must be a bool tensor")
        missing = ~self.expression_present
        if bool(missing.any()) and bool(self.expression_basis[missing].abs().max() > 0):
            self._fail("a shape flagged missing has a non-zero delta (missing shapes are all zeros)")
        J = len(JOINTS)
        self._check_shape("joint_regressor", self.joint_regressor, (J, V), float_ok=True)
        if not torch.allclose(self.joint_regressor.double().sum(1), torch.ones(J, dtype=torch.float64), atol=1e-4):
            self._fail("joint regressor rows must sum to 1 (affine combinations of vertices)")
        self._check_shape("skin_weights", self.skin_weights, (V, J), float_ok=True)
        w = self.skin_weights.double()
        if bool((w < -1e-6).any()) or not torch.allclose(w.sum(1), torch.ones(V, dtype=torch.float64), atol=1e-4):
            self._fail("skinning weights must be >= 0 and sum to 1 per vertex")
        if self.identity_basis is not None:
            K = self._check_shape("identity_basis", self.identity_basis, (None, V, 3), float_ok=True)
            if K == 0:
                self._fail("identity basis has no components (use None for a rig without one)")
        if self.expression_components is not None:
            E = self._check_shape("expression_components", self.expression_components, (None, V, 3), float_ok=True)
            if E == 0:
                self._fail("expression_components has no components (use None for a rig without them)")
        if self.pose_correctives is not None:
            self._check_shape("pose_correctives", self.pose_correctives, (J - 1, 9, V, 3), float_ok=True)
        for kind, emb in self.landmarks.items():
            kind = LandmarkSet(kind)
            L = LANDMARK_COUNTS[kind]
            self._check_shape(f"landmarks[{kind}].triangles", emb.triangles, (L,), integer=True)
            self._check_shape(f"landmarks[{kind}].barycentrics", emb.barycentrics, (L, 3), float_ok=True)
            if int(emb.triangles.min()) < 0 or int(emb.triangles.max()) >= F:
                self._fail(f"landmarks[{kind}] index triangles that do not exist")
            if not torch.allclose(emb.barycentrics.double().sum(1), torch.ones(L, dtype=torch.float64), atol=1e-4):
                self._fail(f"landmarks[{kind}] barycentrics must sum to 1")
            if emb.reliable is not None and (emb.reliable.shape != (L,) or emb.reliable.dtype != torch.bool):
                self._fail(f"landmarks[{kind}].reliable must be a [{L}] bool tensor")

    # ------------------------------------------------------------------------------------------ checks
    def _fail(self, problem: str):
        raise InputError(f"head rig ({self.source or 'unnamed source'}): {problem}",
                         fix="rebuild the rig from its source; if the source files were edited, restore them")

    def _check_shape(self, name: str, t: Tensor, shape: tuple[int | None, ...], *, integer: bool = False,
                     float_ok: bool = False) -> int:
        if not isinstance(t, Tensor):
            self._fail(f"{name} must be a tensor (got {type(t).__name__})")
        if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape, strict=True)):
            want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
            self._fail(f"{name} has shape {list(t.shape)}, expected {want}")
        if integer and t.dtype != torch.int64:
            self._fail(f"{name} must be int64 (got {t.dtype})")
        if float_ok:
            if not t.is_floating_point():
                self._fail(f"{name} must be a floating-point tensor (got {t.dtype})")
            if not bool(torch.isfinite(t).all()):
                self._fail(f"{name} has non-finite values")
        return t.shape[0] if t.ndim else 0

    # ------------------------------------------------------------------------------------------ views
    @property
    def num_vertices(self) -> int:
        return self.template.shape[0]

    @property
    def num_identity(self) -> int:
        return 0 if self.identity_basis is None else self.identity_basis.shape[0]

    @property
    def num_components(self) -> int:
        return 0 if self.expression_components is None else self.expression_components.shape[0]

    @property
    def parents(self) -> tuple[int, ...]:
        return JOINT_PARENTS

    @property
    def rest_joints(self) -> Tensor:  # [J, 3] joints of the template
        return self.joint_regressor @ self.template

    def region_mask(self, region: Region | str) -> Tensor:  # [V] bool
        region = Region(region)
        if region not in self.region_names:
            raise KeyError(f"rig has no region {region!r} (regions: {[str(r) for r in self.region_names]})")
        return self.regions == self.region_names.index(region)

    def missing_expressions(self) -> tuple[str, ...]:
        return tuple(n for n, p in zip(ARKIT_NAMES, self.expression_present.tolist(), strict=True) if not p)


def affine_regressor(vertices: Tensor, points: Tensor, support: Tensor) -> Tensor:
    """Minimum-norm affine weights reproducing ``points`` from supporting vertices.

    vertices [V, 3], points [J, 3], support [J, V] bool -> regressor [J, V] with rows summing to 1, zero off
    the support, and ``regressor @ vertices == points``. Each row solves the underdetermined system
    [v_s^T; 1^T] w = [p; 1] for the smallest |w|: spread-out weights, so a joint follows the local shape
    of its support (an eyeball's centre follows the eyeball) under identity changes.
    """
    V = vertices.shape[0]
    rows = []
    for p, mask in zip(points.double(), support, strict=True):
        idx = mask.nonzero().squeeze(1)
        if idx.numel() < 4:
            raise ValueError(f"affine_regressor: a joint needs at least 4 supporting vertices (got {idx.numel()})")
        A = torch.cat([vertices[idx].double().T, torch.ones(1, idx.numel(), dtype=torch.float64)])  # [4, S]
        b = torch.cat([p, torch.ones(1, dtype=torch.float64)])  # [4]
        w = torch.linalg.pinv(A) @ b  # [S] minimum-norm solution
        row = torch.zeros(V, dtype=torch.float64)
        row[idx] = w
        rows.append(row)
    return torch.stack(rows).to(vertices.dtype)
