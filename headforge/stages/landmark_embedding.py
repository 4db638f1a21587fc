"""Compute a rig's MediaPipe-478 landmark embedding by detecting on renders of it and triangulating.

No source publishes where MediaPipe's 478 face-mesh points lie on ICT-FaceKit (or any rig), so the package
computes it once (``tools/generate_landmark_embedding.py``) and ships the result as generated data:

1. Render the rig's neutral (eye overlay shells left out, as in the rig sheet) with head-light Lambert shading
   and plausible colours (skin tone, white eyeballs, brown iris, dark pupil) from a grid of views over a
   frontal cone (yaw x pitch, degrees; +yaw looks from the subject's left, +pitch from above).
2. Detect with :class:`FaceDetector` (478 points in pixels per view; views without a face are dropped).
3. Triangulate with :func:`triangulate_landmarks` (RANSAC over view pairs, ``min_inliers`` agreeing views).
4. Snap each point to the closest point of the rig's surface restricted to the face skin and eyeball
   triangles (:func:`closest_points_on_triangles`, exact, float64) -> triangle index + barycentrics.

A landmark is *reliable* when the triangulation is (enough agreeing views) and its point lies within
``max_surface_mm`` of the surface. Fewer than ``min_reliable`` of the 478 reliable is a ``HeadforgeError``:
never an embedding with guessed points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from headforge.errors import HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.geometry.triangulate import triangulate_landmarks
from headforge.representations.rig.head_rig import JOINTS, HeadRig, Joint, LandmarkEmbedding, Region
from headforge.stages.face_landmarks import NUM_LANDMARKS, FaceDetector
from headforge.validation import Checked, Count, Fraction, ImageSide, Positive
from headforge.viz.rig_sheet import framing_camera, pupil_mask, render_tile, visible_faces

SKIN_RGB = (0.80, 0.60, 0.50)  # sRGB
SCLERA_RGB = (0.92, 0.90, 0.88)
IRIS_RGB = (0.35, 0.22, 0.12)
PUPIL_RGB = (0.05, 0.04, 0.04)
IRIS_DEG = 28.0  # half-angle of the iris cap on each eyeball (pupil: rig_sheet.PUPIL_DEG)
SNAP_REGIONS = (Region.FACE_SKIN, Region.EYES)  # the surface landmarks are snapped onto


@dataclass(frozen=True)
class EmbedConfig(Checked):
    size: ImageSide = 384  # pixels, square views (MediaPipe crops the face to 256 px; larger adds pixel noise)
    yaws: tuple[float, ...] = (-40.0, -20.0, 0.0, 20.0, 40.0)  # degrees, + looks from the subject's left (+x)
    pitches: tuple[float, ...] = (-20.0, 0.0, 20.0)  # degrees, + looks from above
    threshold_px: Positive = 4.0  # RANSAC inlier threshold of the triangulation
    min_inliers: Count = 3  # views that must agree for a triangulated point to count
    max_surface_mm: Positive = 4.0  # a triangulated point farther than this from the surface is unreliable
    min_reliable: Fraction = 0.95  # fraction of the 478 that must be reliable, else HeadforgeError


@dataclass(frozen=True, eq=False)
class EmbeddingReport:
    views: int
    views_with_face: int
    points: Tensor  # [478, 3] float64 triangulated points (head frame, metres); NaN where seen in < 2 views
    num_inliers: Tensor  # [478] int64 views agreeing with each triangulated point
    error_px: Tensor  # [478] float64 median reprojection error over the inlier views
    surface_mm: Tensor  # [478] float64 distance from the triangulated point to the surface
    reliable: Tensor  # [478] bool

    def summary(self) -> dict[str, float]:
        ok = self.reliable
        return {"views": self.views, "views_with_face": self.views_with_face,
                "reliable": int(ok.sum()), "reliable_fraction": float(ok.double().mean()),
                "error_px_median": float(self.error_px[ok].median()), "error_px_max": float(self.error_px[ok].max()),
                "surface_mm_median": float(self.surface_mm[ok].median()),
                "surface_mm_max": float(self.surface_mm[ok].max())}


# ------------------------------------------------------------------------------------------ maths
def closest_points_on_triangles(points: Tensor, tris: Tensor) -> tuple[Tensor, Tensor]:
    """points [P, 3], triangles [T, 3, 3] -> closest points [P, T, 3] and barycentrics [P, T, 3] (exact).

    The point's projection onto the plane when its barycentrics are all >= 0, else the nearest of the three
    edge-segment closest points. A degenerate triangle (zero area) uses its edges only."""
    p = points[:, None, :]  # [P, 1, 3]
    a, b, c = tris[None, :, 0], tris[None, :, 1], tris[None, :, 2]  # [1, T, 3]
    n = torch.linalg.cross(b - a, c - a)  # [1, T, 3]
    nn = (n * n).sum(-1, keepdim=True)
    q = p - ((p - a) * n).sum(-1, keepdim=True) / nn.clamp_min(1e-300) * n  # plane projection [P, T, 3]
    wa = (torch.linalg.cross(b - q, c - q) * n).sum(-1) / nn[..., 0].clamp_min(1e-300)
    wb = (torch.linalg.cross(c - q, a - q) * n).sum(-1) / nn[..., 0].clamp_min(1e-300)
    inside = (wa >= 0) & (wb >= 0) & (1 - wa - wb >= 0) & (nn[..., 0] > 0)
    best, bary = q, torch.stack([wa, wb, 1 - wa - wb], -1)
    best_d = torch.where(inside, ((p - q) ** 2).sum(-1), torch.full_like(wa, math.inf))
    eye = torch.eye(3, dtype=points.dtype)
    for i, j in ((0, 1), (1, 2), (2, 0)):  # edge from corner i to corner j
        u, v = tris[None, :, i], tris[None, :, j]
        e = v - u
        t = (((p - u) * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-300)).clamp(0, 1)  # [P, T]
        s = u + t[..., None] * e
        d = ((p - s) ** 2).sum(-1)
        better = d < best_d
        best = torch.where(better[..., None], s, best)
        bary = torch.where(better[..., None], (1 - t)[..., None] * eye[i] + t[..., None] * eye[j], bary)
        best_d = torch.where(better, d, best_d)
    return best, bary


def snap_to_surface(points: Tensor, vertices: Tensor, faces: Tensor, chunk: int = 32
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """points [P, 3], vertices [V, 3], faces [F, 3] -> triangle [P] (into ``faces``), barycentrics [P, 3],
    distance [P], all float64; the exact closest surface point over every triangle."""
    tris = vertices.double()[faces]  # [F, 3, 3]
    out_t, out_b, out_d = [], [], []
    for start in range(0, len(points), chunk):
        p = points[start:start + chunk].double()
        q, bary = closest_points_on_triangles(p, tris)
        d = (q - p[:, None]).norm(dim=-1)  # [p, F]
        k = d.argmin(1)
        rows = torch.arange(len(p))
        out_t.append(k)
        out_b.append(bary[rows, k])
        out_d.append(d[rows, k])
    return torch.cat(out_t), torch.cat(out_b), torch.cat(out_d)


def snap_faces(rig: HeadRig) -> Tensor:  # [F] bool: triangles whose corners are all in SNAP_REGIONS
    keep = torch.zeros(rig.num_vertices, dtype=torch.bool)
    for region in SNAP_REGIONS:
        if region in rig.region_names:
            keep |= rig.region_mask(region)
    return keep[rig.faces].all(1)


# ------------------------------------------------------------------------------------------ renders
def embed_cameras(rig: HeadRig, cfg: EmbedConfig) -> Cameras:
    """One camera per (pitch, yaw), framing the face-skin box as the rig sheet's front view does."""
    tpl = rig.template.float()
    pts = tpl[rig.region_mask(Region.FACE_SKIN)] if Region.FACE_SKIN in rig.region_names else tpl
    lo, hi = pts.min(0).values, pts.max(0).values
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * 1.1
    views = []
    for pitch in cfg.pitches:
        for yaw in cfg.yaws:
            y, p = math.radians(yaw), math.radians(pitch)
            direction = torch.tensor([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
            views.append(framing_camera(centre, direction, float(half[0]), float(half[1]), float(half[2]), cfg.size,
                                 cfg.size))
    return Cameras.create(*(torch.cat([getattr(v, k) for v in views]) for k in
                            ("world_to_camera", "fx", "fy", "cx", "cy", "width", "height")))


def face_colours(rig: HeadRig) -> Tensor:  # [V, 3] sRGB: skin, sclera, iris and pupil
    colours = torch.tensor(SKIN_RGB).expand(rig.num_vertices, 3).clone()
    if Region.EYES in rig.region_names:
        eyes = rig.region_mask(Region.EYES)
        joints = rig.rest_joints.float()[[JOINTS.index(Joint.LEFT_EYE), JOINTS.index(Joint.RIGHT_EYE)]]
        rel = rig.template.float()[:, None] - joints  # [V, 2, 3]
        d = rel[torch.arange(rig.num_vertices), rel.norm(dim=-1).argmin(1)]
        forward = d[:, 2] / d.norm(dim=-1).clamp_min(1e-12)
        colours[eyes] = torch.tensor(SCLERA_RGB)
        colours[eyes & (forward > math.cos(math.radians(IRIS_DEG)))] = torch.tensor(IRIS_RGB)
        colours[pupil_mask(rig)] = torch.tensor(PUPIL_RGB)
    return colours


def render_views(rig: HeadRig, cameras: Cameras, texture: Tensor | None = None) -> list[Tensor]:
    """V x [H, W, 3] float sRGB in [0, 1]: the neutral with head-light shading, in flat face colours, or with
    ``texture`` [H, W, 3] (an albedo in the rig's own UV layout) when given, over the sheet's grey."""
    if texture is None:
        faces, colours = visible_faces(rig), face_colours(rig)
        return [torch.from_numpy(render_tile(rig.template, faces, colours, cameras[i])) for i in range(len(cameras))]
    from headforge.renderers.mesh_render import render_mesh
    from headforge.stages.rig_evaluate import rig_mesh
    from headforge.viz.rig_sheet import BACKGROUND

    out = []
    for i in range(len(cameras)):
        r = render_mesh(rig_mesh(rig, rig.template, texture), cameras[i], shading=True)
        a = r.alpha[..., None]
        out.append((r.rgb * a + BACKGROUND * (1 - a))[0])
    return out


# ------------------------------------------------------------------------------------------ stage
def embed_mediapipe(rig: HeadRig, cfg: EmbedConfig = EmbedConfig(), texture: Tensor | None = None
                    ) -> tuple[LandmarkEmbedding, EmbeddingReport]:
    """The rig's MediaPipe-478 embedding (see the module doc) and its report; HeadforgeError when unreliable.
    ``texture``: render with this albedo (the rig's UV layout) instead of flat colours: MediaPipe places brows,
    lids and lips where a textured face shows them, as on real photos."""
    cameras = embed_cameras(rig, cfg)
    images = render_views(rig, cameras, texture)
    V = len(images)
    points2d = torch.full((V, NUM_LANDMARKS, 2), float("nan"), dtype=torch.float64)
    with FaceDetector() as detector:
        for i, image in enumerate(images):
            det = detector.detect(image)
            if det.found:
                points2d[i] = det.landmarks.double()
    seen = torch.isfinite(points2d).all(-1)  # [V, 478]
    found = int(seen.any(1).sum())
    if found < cfg.min_inliers:
        raise HeadforgeError(f"MediaPipe found a face in {found} of {V} renders of the rig ({rig.source}); "
                             f"triangulation needs at least {cfg.min_inliers}",
                             fix="check that the rig's neutral is a face in the head frame (+z forward, +y up)")
    tri = triangulate_landmarks(cameras, points2d, seen, cfg.threshold_px, min_inliers=cfg.min_inliers)
    mask = snap_faces(rig)
    face_index = torch.nonzero(mask)[:, 0]
    finite = torch.isfinite(tri.points).all(-1)
    points = torch.where(finite[:, None], tri.points, torch.zeros((), dtype=torch.float64))
    local, bary, dist = snap_to_surface(points, rig.template, rig.faces[face_index])
    surface_mm = torch.where(finite, dist * 1000.0, torch.full_like(dist, math.inf))
    reliable = tri.reliable & finite & (surface_mm <= cfg.max_surface_mm)
    report = EmbeddingReport(V, found, tri.points, tri.num_inliers, tri.error_px, surface_mm, reliable)
    if float(reliable.double().mean()) < cfg.min_reliable:
        raise HeadforgeError(f"only {int(reliable.sum())} of {NUM_LANDMARKS} MediaPipe landmarks are reliable on "
                             f"{rig.source} (need {cfg.min_reliable:.0%}; faces found in {found} of {V} views)",
                             fix="render more views or larger images (EmbedConfig.size, yaws, pitches)")
    return LandmarkEmbedding(face_index[local], bary.float(), reliable), report
