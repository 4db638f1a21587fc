"""Summaries and frusta plots of captures: ``summarize``, ``format_summary``, ``plot_frusta``.

Scene centre: the median of the COLMAP 3D points when the capture was read from a COLMAP model with
points, else the least-squares point nearest all optical axes (``optical_axes_centre``).

Scene bounds (axis-aligned): the 1st..99th percentile box of the COLMAP points when present, else a
cube around the centre whose half-size is the radius of the ball around the centre that 75% of the
cameras see whole: per camera ``d * sin(half_fov - off_axis)`` (``d`` = distance to the centre,
``half_fov`` = half the smaller field of view, ``off_axis`` = angle between its view direction and
the centre), taking the 25th percentile over cameras.

Layout (``classify_layout``), from the unit directions ``u_i`` from the centre to the cameras:
1. ``frontal``: every camera within 45 deg of the mean direction.
2. Fit a plane: its normal ``n`` is the least-variance axis of the ``u_i``. If at least 75% of the
   cameras (and 3 or more) have an elevation ``asin(u . n)`` within 15 deg of the median elevation,
   the layout is planar: ``ring`` if those cameras leave no azimuth gap over 90 deg, else ``arc``.
   (A ring with a few extra cameras above it is still a ring.)
3. Else with ``m = |mean u_i|`` and the variances ``l1 <= l2`` of the ``u_i`` along their two least-spread
   axes: ``sphere`` if ``m < 0.3`` and ``l1 > 0.12`` (uniform sphere: m = 0, l = 1/3);
   ``hemisphere`` if ``0.3 <= m <= 0.75``, ``l1 > 0.03`` and ``l2 > 0.12`` (uniform: m = 1/2,
   l = 1/12, 1/3, 1/3); else ``other``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from headforge.atomic import atomic_path
from headforge.captures.capture import Capture, CaptureFormat
from headforge.geometry.cameras import Cameras


class Layout(StrEnum):
    RING = "ring"
    ARC = "arc"
    SPHERE = "sphere"
    HEMISPHERE = "hemisphere"
    FRONTAL = "frontal"
    OTHER = "other"


class PointsSource(StrEnum):
    """What the scene centre or bounds were measured from."""

    COLMAP_POINTS = "colmap_points"  # the COLMAP model's 3D points
    OPTICAL_AXES = "optical_axes"  # centre: the point nearest all optical axes
    CAMERA_FOV = "camera_fov"  # bounds: the ball most cameras see whole


Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class CaptureSummary:
    format: CaptureFormat | None  # None: an in-memory capture
    source_path: str | None
    num_views: int
    num_train: int
    num_test: int
    num_frames: int  # distinct timesteps
    width: int  # most common image size
    height: int
    sizes: tuple[tuple[int, int], ...]  # every distinct (width, height), most common first
    has_distortion: bool
    fov_x_deg: float  # median over cameras
    fov_y_deg: float
    centre: Vec3
    centre_source: PointsSource  # COLMAP_POINTS or OPTICAL_AXES
    distance_min: float  # camera distance to the centre
    distance_median: float
    distance_max: float
    layout: Layout
    bounds_min: Vec3
    bounds_max: Vec3
    bounds_source: PointsSource  # COLMAP_POINTS or CAMERA_FOV

    def to_json(self) -> dict:
        """A JSON-ready dict (``json.dumps(summary.to_json())``)."""
        out = asdict(self)
        for key in ("format", "layout", "centre_source", "bounds_source"):
            out[key] = None if out[key] is None else str(out[key])
        out["sizes"] = [list(s) for s in self.sizes]
        for key in ("centre", "bounds_min", "bounds_max"):
            out[key] = list(out[key])
        return out


# ---------------------------------------------------------------------------------------- maths
def optical_axes_centre(centers: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """Least-squares point nearest all lines ``c_i + t f_i`` [N, 3] each.

    Solves ``sum_i (I - f_i f_i^T) (p - c_i) = 0`` with a tiny ridge towards the cameras' centroid, so
    that parallel axes (where the point is undetermined along them) give a finite answer.
    """
    f = forwards / np.linalg.norm(forwards, axis=1, keepdims=True)
    P = np.eye(3)[None] - f[:, :, None] * f[:, None, :]
    A, b = P.sum(0), (P @ centers[:, :, None]).sum(0)[:, 0]
    ridge = 1e-6 * max(np.trace(A), 1e-12)
    return np.linalg.solve(A + ridge * np.eye(3), b + ridge * centers.mean(0))


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1)))


def classify_layout(directions: np.ndarray) -> Layout:
    """Layout from unit directions centre -> camera [N, 3] (rule in the module docstring)."""
    u = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    m = u.mean(0)
    if np.linalg.norm(m) > 1e-6 and _angle_deg(u, m / np.linalg.norm(m)).max() <= 45:
        return Layout.FRONTAL
    variances, axes = np.linalg.eigh(np.cov((u - m).T, bias=True))
    n = axes[:, 0]
    elevation = np.degrees(np.arcsin(np.clip(u @ n, -1, 1)))
    in_plane = np.abs(elevation - np.median(elevation)) <= 15
    if in_plane.mean() >= 0.75 and in_plane.sum() >= 3:
        e1, e2 = axes[:, 2], axes[:, 1]
        azimuth = np.sort(np.degrees(np.arctan2(u[in_plane] @ e2, u[in_plane] @ e1)))
        gaps = np.diff(np.concatenate([azimuth, azimuth[:1] + 360]))
        return Layout.RING if gaps.max() <= 90 else Layout.ARC
    r = float(np.linalg.norm(m))
    if r < 0.3 and variances[0] > 0.12:
        return Layout.SPHERE
    if 0.3 <= r <= 0.75 and variances[0] > 0.03 and variances[1] > 0.12:
        return Layout.HEMISPHERE
    return Layout.OTHER


def fields_of_view(cameras: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal and vertical fields of view [N] in radians (pinhole, principal point anywhere)."""
    fx, fy, cx, cy = (t.double().numpy() for t in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    w, h = cameras.width.double().numpy(), cameras.height.double().numpy()
    return np.arctan(cx / fx) + np.arctan((w - cx) / fx), np.arctan(cy / fy) + np.arctan((h - cy) / fy)


def visible_radius(centers: np.ndarray, forwards: np.ndarray, centre: np.ndarray, half_fov: np.ndarray,
                   quantile: float = 0.25) -> float:
    """Radius of the ball around ``centre`` that ``1 - quantile`` of the cameras see whole."""
    to_centre = centre - centers
    d = np.linalg.norm(to_centre, axis=1)
    off_axis = np.radians(_angle_deg(forwards, to_centre / np.maximum(d, 1e-12)[:, None]))
    r = d * np.sin(np.clip(half_fov - off_axis, 0, math.pi / 2))
    radius = float(np.quantile(r, quantile))
    return radius if radius > 0 else float(np.median(d * np.sin(half_fov)))


def _colmap_points(capture: Capture) -> np.ndarray | None:
    if capture.source_format is not CaptureFormat.COLMAP or capture.source_path is None:
        return None
    from headforge.captures.colmap import read_points3d

    points = read_points3d(capture.source_path.parent)
    return None if points is None or len(points[0]) == 0 else points[0]


def _rounded(v: np.ndarray) -> Vec3:
    return tuple(float(x) for x in np.round(v, 6))


def summarize(capture: Capture) -> CaptureSummary:
    cams = capture.native_cameras
    centers = cams.centers().double().numpy()
    forwards = cams.forward_axes().double().numpy()
    fov_x, fov_y = fields_of_view(cams)
    points = _colmap_points(capture)
    if points is not None:
        centre, centre_source = np.median(points, 0), PointsSource.COLMAP_POINTS
        lo, hi = np.percentile(points, 1, axis=0), np.percentile(points, 99, axis=0)
        bounds_source = PointsSource.COLMAP_POINTS
    else:
        centre, centre_source = optical_axes_centre(centers, forwards), PointsSource.OPTICAL_AXES
        radius = visible_radius(centers, forwards, centre, 0.5 * np.minimum(fov_x, fov_y))
        lo, hi, bounds_source = centre - radius, centre + radius, PointsSource.CAMERA_FOV
    offsets = centers - centre
    dist = np.linalg.norm(offsets, axis=1)
    sizes = Counter(zip(cams.width.tolist(), cams.height.tolist(), strict=True)).most_common()
    return CaptureSummary(
        format=capture.source_format, source_path=None if capture.source_path is None else str(capture.source_path),
        num_views=len(capture), num_train=len(capture.split.train), num_test=len(capture.split.test),
        num_frames=len(set(capture.frames.tolist())), width=sizes[0][0][0], height=sizes[0][0][1],
        sizes=tuple(s for s, _ in sizes), has_distortion=cams.has_distortion(),
        fov_x_deg=round(float(np.degrees(np.median(fov_x))), 4),
        fov_y_deg=round(float(np.degrees(np.median(fov_y))), 4),
        centre=_rounded(centre), centre_source=centre_source,
        distance_min=round(float(dist.min()), 6), distance_median=round(float(np.median(dist)), 6),
        distance_max=round(float(dist.max()), 6),
        layout=classify_layout(offsets[dist > 1e-9]) if (dist > 1e-9).any() else Layout.OTHER,
        bounds_min=_rounded(lo), bounds_max=_rounded(hi), bounds_source=bounds_source)


def _vec(v: Vec3, scale: float) -> str:
    """Fixed decimals suited to ``scale`` (so that 1e-7 noise on a 3 m ring prints as 0.000)."""
    digits = max(0, 3 - math.floor(math.log10(scale))) if scale > 0 else 3
    return "(" + ", ".join(f"{x + 0.0:.{digits}f}" for x in v) + ")"


def format_summary(summary: CaptureSummary) -> str:
    """A plain-text block (no rich markup characters, safe to print through rich)."""
    s = summary
    sizes = f"{s.width} x {s.height} px"
    if len(s.sizes) > 1:
        sizes += f" (also {', '.join(f'{w} x {h}' for w, h in s.sizes[1:])})"
    size = tuple(b - a for a, b in zip(s.bounds_min, s.bounds_max, strict=True))
    scale = s.distance_median
    lines = [
        f"Format      {s.format or 'in memory'}" + (f"  {s.source_path}" if s.source_path else ""),
        f"Views       {s.num_views} ({s.num_train} train, {s.num_test} test), "
        f"{s.num_frames} frame{'s' if s.num_frames != 1 else ''}",
        f"Images      {sizes}" + (", distorted" if s.has_distortion else ""),
        f"FoV         {s.fov_x_deg:.1f} x {s.fov_y_deg:.1f} deg (median)",
        f"Layout      {s.layout}",
        f"Distance    {s.distance_min:.3g} / {s.distance_median:.3g} / {s.distance_max:.3g} "
        "(min / median / max, camera to centre)",
        f"Centre      {_vec(s.centre, scale)} from {s.centre_source.replace('_', ' ')}",
        f"Bounds      {_vec(s.bounds_min, scale)} to {_vec(s.bounds_max, scale)}, size {_vec(size, scale)} "
        f"from {s.bounds_source.replace('_', ' ')}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- plotting
def _display_basis(cams: Cameras, centre: np.ndarray) -> np.ndarray:
    """Rows (side, depth, up): up = the cameras' mean up (-y) axis, depth = towards the mean camera."""
    up = -cams.world_to_camera[:, 1, :3].double().mean(0).numpy()
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-6 else np.array([0.0, 0.0, 1.0])
    toward = cams.centers().double().numpy().mean(0) - centre
    toward = toward - (toward @ up) * up
    if np.linalg.norm(toward) < 1e-6:
        toward = np.cross(up, [1.0, 0, 0] if abs(up[0]) < 0.9 else [0, 1.0, 0])
    toward = toward / np.linalg.norm(toward)
    return np.stack([np.cross(toward, up), toward, up])


def frustum_segments(cams: Cameras, size: float) -> np.ndarray:
    """Line segments [N, 8, 2, 3] (apex to 4 corners, 4 image edges) of frusta ``size`` deep, in world."""
    w, h = cams.width.double().numpy(), cams.height.double().numpy()
    fx, fy, cx, cy = (t.double().numpy() for t in (cams.fx, cams.fy, cams.cx, cams.cy))
    corners = np.stack([np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(fx)], -1)
                        for u, v in ((0, 0), (w, 0), (w, h), (0, h))], 1) * size  # [N, 4, 3] camera
    c2w = cams.camera_to_world().double().numpy()
    world = np.einsum("nij,nkj->nki", c2w[:, :3, :3], corners) + c2w[:, None, :3, 3]
    apex = np.repeat(c2w[:, None, :3, 3], 4, 1)
    rays = np.stack([apex, world], 2)
    edges = np.stack([world, np.roll(world, -1, 1)], 2)
    return np.concatenate([rays, edges], 1)


def _box_segments(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:  # [12, 2, 3]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return np.stack([corners[[a, b]] for a, b in pairs])


def plot_frusta(capture: Capture, path: str | Path, *, summary: CaptureSummary | None = None) -> Path:
    """Write a PNG of the camera frusta (train blue, test orange), the bounds box and the centre, seen in
    perspective, from the top and from the front. Each distinct pose is drawn once (first view's role)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    summary = summary or summarize(capture)
    cams = capture.native_cameras
    keys = [tuple(np.round(cams.world_to_camera[i].double().numpy(), 6).ravel()) for i in range(len(cams))]
    first = list(dict.fromkeys(keys))
    index = [keys.index(k) for k in first]
    test = set(capture.split.test)
    shown = cams[index]
    centre = np.array(summary.centre)
    basis = _display_basis(cams, centre)
    to_display = lambda p: (np.asarray(p) - centre) @ basis.T  # noqa: E731
    frusta = to_display(frustum_segments(shown, 0.15 * max(summary.distance_median, 1e-6)))
    colours = ["tab:orange" if i in test else "tab:blue" for i in index]
    box = to_display(_box_segments(np.array(summary.bounds_min), np.array(summary.bounds_max)))
    everything = np.concatenate([frusta.reshape(-1, 3), box.reshape(-1, 3), np.zeros((1, 3))])
    mid, half = (everything.max(0) + everything.min(0)) / 2, (everything.max(0) - everything.min(0)).max() / 2 * 1.05

    fig = Figure(figsize=(15, 5.2), dpi=100)
    FigureCanvasAgg(fig)
    ax3 = fig.add_subplot(1, 3, 1, projection="3d")
    ax3.add_collection3d(Line3DCollection(frusta.reshape(-1, 2, 3), colors=np.repeat(colours, 8), linewidths=0.8))
    ax3.add_collection3d(Line3DCollection(box, colors="0.5", linestyles="--", linewidths=0.8))
    ax3.scatter([0], [0], [0], color="red", s=20)
    for setter, k in ((ax3.set_xlim, 0), (ax3.set_ylim, 1), (ax3.set_zlim, 2)):
        setter(mid[k] - half, mid[k] + half)
    ax3.set_box_aspect((1, 1, 1))
    ax3.set(xlabel="side", ylabel="depth", zlabel="up", title="perspective")
    for pos, (a, b), title in ((2, (0, 1), "top (looking down)"), (3, (0, 2), "front (from the cameras)")):
        ax = fig.add_subplot(1, 3, pos)
        ax.add_collection(LineCollection(frusta[..., [a, b]].reshape(-1, 2, 2), colors=np.repeat(colours, 8),
                                         linewidths=0.8))
        ax.add_collection(LineCollection(box[..., [a, b]], colors="0.5", linestyles="--", linewidths=0.8))
        ax.plot([0], [0], "o", color="red", markersize=4)
        ax.set_xlim(mid[a] - half, mid[a] + half)
        ax.set_ylim(mid[b] - half, mid[b] + half)
        ax.set_aspect("equal")
        if pos == 3:  # seen from the cameras' side, +side points left (side x up points away from them)
            ax.invert_xaxis()
        ax.set(xlabel="side", ylabel=("depth", "up")[pos - 2], title=title)
    handles = [Line2D([], [], color="tab:blue", label=f"train ({summary.num_train})"),
               Line2D([], [], color="tab:orange", label=f"test ({summary.num_test})"),
               Line2D([], [], color="0.5", linestyle="--", label=f"bounds ({summary.bounds_source.replace('_', ' ')})"),
               Line2D([], [], marker="o", color="red", linestyle="", label="centre")]
    fig.legend(handles=handles, loc="lower center", ncol=4)
    fig.subplots_adjust(left=0.03, right=0.98, wspace=0.3, bottom=0.16)
    fig.suptitle(f"{summary.format or 'in memory'}: {summary.num_views} views, {summary.layout} layout")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
