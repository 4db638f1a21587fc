"""Stage: face detection, the 478-point MediaPipe face mesh and person segmentation, per image and per capture.

Needs the optional ``face`` extra (``pip install 'headforge[face]'``: mediapipe 0.10.21). Only the legacy
``mediapipe.solutions`` graphs are used (``face_mesh`` with ``refine_landmarks`` for the 10 iris points,
``face_detection`` short range, ``selfie_segmentation`` general): their .tflite models ship inside the wheel,
so detection works offline. The Tasks API (``FaceLandmarker``) needs a separately downloaded .task file.

Pixel convention of every result: x right, y down, in pixels of the image as given, with pixel (i, j)
covering [i, i+1) x [j, j+1) so its centre is (i + 0.5, j + 0.5): headforge's camera convention
(geometry/cameras.py). MediaPipe's normalised coordinates span the image edges (0 = left/top edge, 1 =
right/bottom edge), so pixels = normalised * (width, height).

Landmark indices are MediaPipe's (mediapipe/python/solutions/face_mesh_connections.py, and the canonical
face model's UV map in mediapipe/modules/face_geometry/data): "left"/"right" are the *subject's*.
"""

from __future__ import annotations

import hashlib
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from headforge.atomic import atomic_path
from headforge.captures.capture import Capture, ColourSpace
from headforge.errors import CaptureError, HeadforgeError
from headforge.geometry.cameras import Cameras
from headforge.geometry.triangulate import Triangulation, triangulate_landmarks
from headforge.validation import Checked, Count, Fraction

NUM_LANDMARKS = 478  # 468 mesh points + 5 per iris
MEDIAPIPE_VERSION = "0.10.21"
DETECTOR_VERSION = 1  # bump when this module changes what a detection returns (invalidates caches)

# Indices with a fixed meaning (face_mesh_connections.py: FACEMESH_LEFT_EYE / RIGHT_EYE / *_IRIS).
NOSE_TIP = 1
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_IRIS_CENTER = 33, 133, 468
LEFT_EYE_OUTER, LEFT_EYE_INNER, LEFT_IRIS_CENTER = 263, 362, 473


@dataclass(frozen=True)
class FaceDetectorConfig(Checked):
    max_faces: Count = 4  # faces the mesh looks for; the largest is kept, the count reported
    min_confidence: Fraction = 0.5  # of the face detectors (mesh and box)
    box_min_iou: Fraction = 0.2  # a detector box matches the kept mesh when their IoU reaches this


@dataclass(frozen=True, eq=False)
class FaceDetections:
    """One image's result. No face: ``num_faces == 0`` and the per-face fields are None."""

    width: int
    height: int
    num_faces: int  # faces the mesh found (up to FaceDetectorConfig.max_faces)
    landmarks: Tensor | None  # [478, 2] float32 pixels of the largest face (see module doc)
    depth: Tensor | None  # [478] float32 MediaPipe's relative depth (z * width, pixels; smaller = nearer)
    box: Tensor | None  # [4] float32 (x0, y0, x1, y1) pixels: the face detector's box, else the landmarks' box
    score: float  # the face detector's score for that box; NaN when no face or no detector box matched
    mask: Tensor  # [H, W] float32 in [0, 1]: person segmentation, quantised to 1/255 (as cached)
    # [num_faces, 4] float32 (x0, y0, x1, y1) landmark boxes of every face the mesh found, largest first (the
    # kept face's is row 0); None when read from a cache written before they were kept
    all_boxes: Tensor | None = None

    @property
    def found(self) -> bool:
        return self.num_faces > 0


def _missing_extra(error: ImportError) -> HeadforgeError:
    return HeadforgeError(f"face landmarks need mediapipe {MEDIAPIPE_VERSION}, which is not installed ({error})",
                          fix="pip install 'headforge[face]'")


def _as_uint8_rgb(image) -> np.ndarray:  # [H, W, 3] uint8 or float in [0, 1] -> contiguous uint8
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise ValueError(f"expected uint8 or finite float RGB in [0, 1], got {arr.dtype}")
    return np.ascontiguousarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8))


def _iou(a: np.ndarray, b: np.ndarray) -> float:  # boxes (x0, y0, x1, y1)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceDetector:
    """The three MediaPipe graphs, created once and reused over many images (``with FaceDetector() as d``)."""

    def __init__(self, config: FaceDetectorConfig | None = None):
        self.config = config or FaceDetectorConfig()
        try:
            from mediapipe.python.solutions import face_detection, face_mesh, selfie_segmentation
        except ImportError as e:
            raise _missing_extra(e) from e
        c = self.config
        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=c.max_faces, refine_landmarks=True,
                                        min_detection_confidence=c.min_confidence)
        self._boxes = face_detection.FaceDetection(model_selection=0, min_detection_confidence=c.min_confidence)
        self._segment = selfie_segmentation.SelfieSegmentation(model_selection=0)
        self._full_range = None  # the full-range box detector, built on first use by face_boxes

    def close(self) -> None:
        for graph in (self._mesh, self._boxes, self._segment, self._full_range):
            if graph is not None:
                graph.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image) -> FaceDetections:
        """Detect in one RGB image [H, W, 3] (uint8, or float in [0, 1] sRGB)."""
        rgb = _as_uint8_rgb(image)
        h, w = rgb.shape[:2]
        mask = np.asarray(self._segment.process(rgb).segmentation_mask, dtype=np.float32)
        mask = torch.from_numpy(np.round(np.clip(mask, 0, 1) * 255).astype(np.float32) / 255)
        faces = self._mesh.process(rgb).multi_face_landmarks or []
        if not faces:
            return FaceDetections(w, h, 0, None, None, None, float("nan"), mask)
        scale = np.array([w, h], dtype=np.float64)
        meshes = [np.array([(p.x, p.y, p.z) for p in f.landmark], dtype=np.float64) for f in faces]
        if any(len(m) != NUM_LANDMARKS for m in meshes):
            raise RuntimeError(f"mediapipe returned {[len(m) for m in meshes]} landmarks, expected {NUM_LANDMARKS}")
        pixels = [m[:, :2] * scale for m in meshes]
        boxes = [np.concatenate([p.min(0), p.max(0)]) for p in pixels]
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        k = int(np.argmax(areas))
        box, score = boxes[k], float("nan")
        best = self.config.box_min_iou
        for d in self._boxes.process(rgb).detections or []:
            r = d.location_data.relative_bounding_box
            cand = np.array([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h])
            iou = _iou(cand, boxes[k])
            if iou >= best:
                best, box, score = iou, cand, float(d.score[0])
        order = sorted(range(len(boxes)), key=lambda i: -areas[i])  # stable: ties keep the mesh's order
        return FaceDetections(w, h, len(faces), torch.from_numpy(pixels[k]).float(),
                              torch.from_numpy(meshes[k][:, 2] * w).float(), torch.from_numpy(box).float(),
                              score, mask, torch.from_numpy(np.stack([boxes[i] for i in order])).float())

    def face_boxes(self, image) -> Tensor:
        """[K, 5] float32 (x0, y0, x1, y1, score), pixels, of every face MediaPipe's *full-range* box detector finds
        (model 1: faces small in the frame, several faces; the mesh's own short-range detector misses those), by
        descending area. The boxes only: run :meth:`detect` on a crop around one for its landmarks."""
        from mediapipe.python.solutions import face_detection

        if self._full_range is None:
            self._full_range = face_detection.FaceDetection(model_selection=1,
                                                            min_detection_confidence=self.config.min_confidence)
        rgb = _as_uint8_rgb(image)
        h, w = rgb.shape[:2]
        rows = []
        for d in self._full_range.process(rgb).detections or []:
            r = d.location_data.relative_bounding_box
            rows.append([r.xmin * w, r.ymin * h, (r.xmin + r.width) * w, (r.ymin + r.height) * h, d.score[0]])
        rows.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def detect_faces(image, config: FaceDetectorConfig | None = None) -> FaceDetections:
    """Detect in one image; see :class:`FaceDetector` to detect in many without rebuilding the graphs."""
    with FaceDetector(config) as detector:
        return detector.detect(image)


# ----------------------------------------------------------------------------- captures
@dataclass(frozen=True, eq=False)
class CaptureLandmarks:
    capture_name: str
    cameras: Cameras  # at the working resolution the images were read at, one per view
    detections: tuple[FaceDetections, ...]  # one per view, in capture order
    skipped: tuple[str, ...]  # names of the views where no face was found
    cache_hits: int  # views read from the cache
    detect_seconds: tuple[float, ...] = field(default=())  # per view actually detected (not cached)

    @property
    def usable(self) -> tuple[int, ...]:
        return tuple(i for i, d in enumerate(self.detections) if d.found)

    def points2d(self) -> Tensor:  # [V, 478, 2] float64 pixels; NaN where no face
        out = torch.full((len(self.detections), NUM_LANDMARKS, 2), float("nan"), dtype=torch.float64)
        for i, d in enumerate(self.detections):
            if d.found:
                out[i] = d.landmarks.double()
        return out

    def valid(self) -> Tensor:  # [V, 478] bool: a face was found and the landmark lies inside the image
        p = self.points2d()
        size = torch.stack([self.cameras.width, self.cameras.height], -1).double()[:, None]  # [V, 1, 2]
        return ((p >= 0) & (p <= size)).all(-1)  # NaN compares False


def triangulate_capture(landmarks: CaptureLandmarks, threshold_px: float = 4.0, *,
                        min_inliers: int = 3) -> Triangulation:
    """The capture's landmarks in its world frame (see ``geometry.triangulate``)."""
    return triangulate_landmarks(landmarks.cameras, landmarks.points2d(), landmarks.valid(), threshold_px,
                                 min_inliers=min_inliers)


def _capture_name(capture: Capture) -> str:
    return str(capture.source_path) if capture.source_path is not None else "in-memory capture"


def _view_key(capture: Capture, index: int, config: FaceDetectorConfig) -> str:
    """Hash of what the detector sees: the image (and separate mask) bytes, the working size, the config
    and the detector version."""
    h = hashlib.sha256()
    view = capture.views[index]
    if capture.images is not None:
        h.update(capture.images[index].contiguous().numpy().tobytes())
    else:
        for path in (view.image_path, view.mask_path):
            if path is not None:
                h.update(Path(path).read_bytes())
    w, ht = int(capture.cameras.width[index]), int(capture.cameras.height[index])
    h.update(f"|{w}x{ht}|{capture.colour_space}|{config}|mediapipe {MEDIAPIPE_VERSION}|v{DETECTOR_VERSION}".encode())
    return h.hexdigest()


def cache_file(capture: Capture, cache_dir: str | Path) -> Path:
    """One .npz per capture (named from its source path); its entries are keyed by content (``_view_key``)."""
    ident = hashlib.sha256(_capture_name(capture).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"face_landmarks_{ident}.npz"


def _to_arrays(key: str, d: FaceDetections) -> dict[str, np.ndarray]:
    out = {f"{key}.size": np.array([d.width, d.height, d.num_faces], dtype=np.int64),
           f"{key}.score": np.array(d.score, dtype=np.float64),
           f"{key}.mask": np.round(d.mask.numpy() * 255).astype(np.uint8)}
    if d.found:
        out[f"{key}.landmarks"] = d.landmarks.numpy()
        out[f"{key}.depth"] = d.depth.numpy()
        out[f"{key}.box"] = d.box.numpy()
        if d.all_boxes is not None:
            out[f"{key}.all_boxes"] = d.all_boxes.numpy()
    return out


def _from_arrays(key: str, z) -> FaceDetections:
    w, h, n = (int(x) for x in z[f"{key}.size"])
    mask = torch.from_numpy(z[f"{key}.mask"].astype(np.float32) / 255)
    get = (lambda name: torch.from_numpy(z[f"{key}.{name}"].copy())) if n > 0 else (lambda name: None)
    boxes = get("all_boxes") if f"{key}.all_boxes" in z else None
    return FaceDetections(w, h, n, get("landmarks"), get("depth"), get("box"), float(z[f"{key}.score"]), mask,
                          boxes)


def _read_cache(path: Path) -> dict[str, FaceDetections]:
    if not path.is_file():
        return {}
    try:
        with np.load(path) as z:
            keys = {name.split(".")[0] for name in z.files}
            return {k: _from_arrays(k, z) for k in keys}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # a damaged cache is re-detected, and said so
        warnings.warn(f"{path}: unreadable face-landmark cache ({e}); detecting again", stacklevel=3)
        return {}


def to_srgb(rgb: Tensor, space: ColourSpace) -> Tensor:  # [H, W, 3] in the capture's space -> sRGB
    if space == ColourSpace.SRGB:
        return rgb
    x = rgb.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.pow(1 / 2.4) - 0.055)


def detect_capture(capture: Capture, cache_dir: str | Path | None = None,
                   config: FaceDetectorConfig | None = None, *, min_views: int = 3) -> CaptureLandmarks:
    """Detect in every view of ``capture`` (at its working resolution; background black where it has masks).

    Views with no face are skipped and named in ``skipped``. With ``cache_dir`` the results are kept in one
    .npz per capture keyed by each view's content hash and the detector version, so a re-run reads them back
    and a changed image is detected again; None detects every time. Raises :class:`CaptureError` when
    fewer than ``min_views`` views show a face."""
    config = config or FaceDetectorConfig()
    keys = [_view_key(capture, i, config) for i in range(len(capture))]
    path = None if cache_dir is None else cache_file(capture, cache_dir)
    cached = {} if path is None else _read_cache(path)
    results: list[FaceDetections | None] = [cached.get(k) for k in keys]
    hits = sum(r is not None for r in results)
    seconds = []
    if hits < len(keys):
        with FaceDetector(config) as detector:
            for i, r in enumerate(results):
                if r is None:
                    rgb = to_srgb(capture.load(i).rgb, capture.colour_space)
                    t0 = time.perf_counter()
                    results[i] = detector.detect(rgb)
                    seconds.append(time.perf_counter() - t0)
        if path is not None:
            arrays = {}
            for k, r in zip(keys, results, strict=True):
                arrays.update(_to_arrays(k, r))
            with atomic_path(path) as tmp:
                np.savez_compressed(tmp, **arrays)
    cams = capture.cameras
    names = [cams.name(i) for i in range(len(capture))]
    skipped = tuple(n for n, r in zip(names, results, strict=True) if not r.found)
    out = CaptureLandmarks(_capture_name(capture), cams, tuple(results), skipped, hits, tuple(seconds))
    if len(out.usable) < min_views:
        raise CaptureError(
            f"fewer than {'three' if min_views == 3 else min_views} usable views: a face was found in "
            f"{len(out.usable)} of {len(capture)} views "
            f"(need {min_views}); no face in: {', '.join(skipped) or 'none'}", path=_capture_name(capture),
            fix="use views that see the front of the face (at least three), large enough for the face "
                "to span ~100 px")
    return out
