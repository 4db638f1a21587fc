"""Stage: one photo -> ``AlignedPhoto`` (the aligned crop, its masks, landmarks and camera in the rig's head frame).

Steps: read (``captures/photo.py``: EXIF orientation, any mode, alpha composited on white and kept as a mask
hint); detect (``detect_subject``: every face's box by MediaPipe's full-range detector, in tiles for small faces
in large photos; the subject is the largest, its 478 landmarks from the mesh run on a 3x crop around it at 512 px;
the person mask of the whole photo); refuse what the later stages cannot use; solve the camera (``photo_camera``:
EXIF or prior focal, PnP on the rig's landmarks); crop to the generator's convention; cut the face and hair masks.

Conventions (where the face sits in the S x S crop; facts of each project, not their code):
- ``facelift``: FaceLift's ``utils_folder/face_utils.py`` (github.com/weijielyu/FaceLift): the largest MTCNN face
  box (confidence > 0.8) is scaled so that its size, the mean of its width and height, is 194.27 px and its
  centre lands on (251.83, 280.01) of a 512 canvas (their training set's statistics); no rotation; background
  white. Here the box is MediaPipe's face detector's (MTCNN is not available offline); both boxes span brows to
  chin and cheek to cheek, so the face lands at FaceLift's scale within the detectors' difference.
- ``panohead``: PanoHead's ``3DDFA_V2_cropping/recrop_images.py`` (github.com/SizheAn/PanoHead), its "default"
  crop on dlib's 68 points: eyes e_r, e_l (each eye's mean), nose n (point 33), centre c = midpoint of points 0
  and 16; the square's axis runs along the eye line, half side max(2.4 |e_l - e_r|, 2.75 |n - (e_l + e_r) / 2|);
  ``crop_final`` maps it to pixels [25, 536] x [51, 562] of a 563 x 563 canvas (512 with 5 % added left and
  right, 10 % on top), which is resized to S. MediaPipe stand-ins for the dlib points: the eyes' contour points
  (FACEMESH_LEFT/RIGHT_EYE), point 2 (below the nose tip) for 33, points 127 and 356 (the face oval at eye
  height) for 0 and 16. Not reproduced: PanoHead's 3DDFA refinement of that square (a rescale within
  0.7..1.3 and a shift from its BFM fit), which needs 3DDFA's model; its reflected border (white here).
- ``face-box``: the face box centred, its side ``face_box_margin`` x its size.

Pixels of the crop outside the photo are white with person mask 0. Masks (heuristics): ``face_mask`` = the
convex hull of MediaPipe's face oval minus the hulls of the eyes, brows and lips (index sets of MediaPipe's
``face_mesh_connections``); ``hair_mask`` = person (>= 0.5) minus the face-oval hull, minus everything below the
chin line (the line through the chin, point 152, across the face's up axis 152 -> 10); below the eye line only
pixels within the 90th-percentile colour distance (sRGB) of the median colour of what is kept above it (the neck,
collar and shoulders beside the jaw are dropped unless hair-coloured). Ears and hats above the eyes count as
hair; hair below the chin is dropped.

Refusals: no face (also a face turned beyond ~70 degrees, or a drawing the detector does not take for a face); a
face under ``min_face_px`` (the face box size, original pixels); a profile beyond the landmark model's range:
MediaPipe's own 3D yaw over ``max_yaw_deg`` or one eye over ``max_eye_ratio`` times wider than the other (on
renders of the built-in head the mesh reads 47 / 56 degrees at a true 40 / 50 and saturates beyond, 51 / 46 / 37
at 60 / 65 / 70, where the eye ratio reaches 2.2-2.7); landmarks that fit no head (a drawing, a cartoon): the PnP
median error over ``max_reprojection_frac`` of the face size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import annotated_types as at
import cv2
import numpy as np
import torch
from torch import Tensor

from headforge.captures.photo import PhotoImage, read_photo
from headforge.errors import InputError
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.face_landmarks import (
    LEFT_EYE_INNER,
    LEFT_EYE_OUTER,
    RIGHT_EYE_INNER,
    RIGHT_EYE_OUTER,
    FaceDetections,
    FaceDetector,
    FaceDetectorConfig,
)
from headforge.stages.photo_camera import mesh_yaw_deg, photo_focal, similarity_camera, solve_head_pose
from headforge.stages.photo_types import AlignConvention, AlignedPhoto, CropBox
from headforge.validation import Checked, ImageSide, Positive

__all__ = ["PhotoAlignConfig", "align_photo", "crop_placement", "feature_index_sets"]

FACELIFT_CANVAS, FACELIFT_FACE_SIZE, FACELIFT_FACE_CENTRE = 512.0, 194.2749650813705, (251.83270369057132,
                                                                                        280.0133630862363)
PANOHEAD_CANVAS, PANOHEAD_QUAD_SIDE, PANOHEAD_QUAD_CENTRE = 563.0, 511.0, (281.0, 307.0)  # pixel centres + 0.5
PANOHEAD_NOSE, PANOHEAD_JAW = 2, (127, 356)
CHIN, FOREHEAD = 152, 10
SUBJECT_CROP, SUBJECT_PX = 3.0, 512  # the mesh runs on 3 x the face box, at 512 px
TILE_MIN_SIDE = 1024  # photos whose short side reaches this are searched in tiles when no face is found
HAIR_MIN_PIXELS, HAIR_COLOUR_QUANTILE = 50, 0.9  # hair below the eyes: within the 90 % colour radius above


@dataclass(frozen=True)
class PhotoAlignConfig(Checked):
    convention: AlignConvention = AlignConvention.FACELIFT
    size: ImageSide = 512  # side of the aligned crop, pixels
    min_face_px: Positive = 64.0  # face box size (mean of width and height) in the photo, pixels
    max_yaw_deg: Annotated[float, at.Gt(0), at.Le(90)] = 50.0
    max_eye_ratio: Annotated[float, at.Gt(1)] = 2.5  # wider eye / narrower eye (corner to corner)
    max_reprojection_frac: Positive = 0.15  # PnP median error / face size above which landmarks fit no head
    focal_35mm_prior: Positive = 50.0  # mm full-frame equivalent when EXIF has no usable focal length
    face_box_margin: Positive = 2.0  # FACE_BOX: crop side / face size
    detector: FaceDetectorConfig = field(default_factory=FaceDetectorConfig)


@lru_cache(maxsize=1)
def feature_index_sets() -> dict[str, tuple[int, ...]]:
    """MediaPipe's landmark index sets (from its face_mesh_connections): oval, eyes, brows, lips."""
    from mediapipe.python.solutions import face_mesh_connections as c

    sets = {"oval": c.FACEMESH_FACE_OVAL, "left_eye": c.FACEMESH_LEFT_EYE, "right_eye": c.FACEMESH_RIGHT_EYE,
            "left_brow": c.FACEMESH_LEFT_EYEBROW, "right_brow": c.FACEMESH_RIGHT_EYEBROW, "lips": c.FACEMESH_LIPS}
    return {k: tuple(sorted({i for edge in v for i in edge})) for k, v in sets.items()}


def _refuse(photo: PhotoImage, problem: str, fix: str) -> InputError:
    return InputError(problem, path=photo.source if photo.source is not None else "in-memory photo", fix=fix)


def crop_placement(landmarks: Tensor, box: Tensor, convention: AlignConvention, size: int, margin: float
                   ) -> tuple[float, float, tuple[float, float]]:
    """(scale, roll in radians, offset) of the map crop = scale * Rot(roll) * photo + offset (pixels, centre
    convention) that puts the face where ``convention`` says (see the module doc). landmarks [478, 2], box [4]."""
    lm, b = landmarks.double(), box.double()
    face_size = float((b[2] - b[0] + b[3] - b[1]) / 2)
    box_centre = (b[:2] + b[2:]) / 2
    if convention is AlignConvention.FACELIFT:
        k = size / FACELIFT_CANVAS
        source_centre, source_side, angle = box_centre, face_size, 0.0
        target_centre, target_side = torch.tensor(FACELIFT_FACE_CENTRE, dtype=torch.float64) * k, FACELIFT_FACE_SIZE * k
    elif convention is AlignConvention.PANOHEAD:
        idx = feature_index_sets()
        eye_r, eye_l = lm[list(idx["right_eye"])].mean(0), lm[list(idx["left_eye"])].mean(0)  # image left, right
        e2e, e2n = eye_l - eye_r, lm[PANOHEAD_NOSE] - (eye_l + eye_r) / 2
        source_side = 2 * max(2.4 * float(e2e.norm()), 2.75 * float(e2n.norm()))
        source_centre = (lm[PANOHEAD_JAW[0]] + lm[PANOHEAD_JAW[1]]) / 2
        angle = math.atan2(float(e2e[1]), float(e2e[0]))
        k = size / PANOHEAD_CANVAS
        target_centre, target_side = torch.tensor(PANOHEAD_QUAD_CENTRE, dtype=torch.float64) * k, PANOHEAD_QUAD_SIDE * k
    else:
        source_centre, source_side, angle = box_centre, face_size * margin, 0.0
        target_centre, target_side = torch.tensor([size / 2, size / 2], dtype=torch.float64), float(size)
    scale, roll = target_side / source_side, -angle
    c, s = math.cos(roll), math.sin(roll)
    rotated = torch.tensor([[c, -s], [s, c]], dtype=torch.float64) @ source_centre
    offset = target_centre - scale * rotated
    return scale, roll, (float(offset[0]), float(offset[1]))


def _affine(scale: float, roll: float, offset: tuple[float, float]) -> np.ndarray:  # [2, 3] in headforge pixels
    c, s = math.cos(roll), math.sin(roll)
    return np.array([[scale * c, -scale * s, offset[0]], [scale * s, scale * c, offset[1]]], dtype=np.float64)


def warp(image: np.ndarray, A: np.ndarray, size: int, border: float) -> np.ndarray:
    """[H, W, C] or [H, W] float32 through the [2, 3] map A (headforge pixel convention) into size x size;
    bilinear, with a Gaussian prefilter when shrinking; outside the photo: ``border``."""
    scale = math.sqrt(abs(np.linalg.det(A[:, :2])))
    if scale < 0.8:  # shrinking by k = 1 / scale: blur by sigma (k - 1) / 2 first (anti-aliasing)
        image = cv2.GaussianBlur(image, (0, 0), (1 / scale - 1) / 2)
    M = A.copy()
    M[:, 2] += A[:, :2] @ np.array([0.5, 0.5]) - 0.5  # OpenCV's pixel centres are integers
    out = cv2.warpAffine(image, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(border,) * 4)
    return out


def _hull_mask(points: np.ndarray, size: int) -> np.ndarray:  # [P, 2] headforge pixels -> [S, S] bool
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round((points - 0.5) * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def face_and_hair_masks(landmarks: Tensor, person: Tensor, image: Tensor) -> tuple[Tensor, Tensor]:
    """face_mask, hair_mask [S, S] bool from crop landmarks [478, 2], the person mask [S, S] and the crop
    [S, S, 3] (module doc); a hair estimate with the face skin's colour is a bald scalp (``_without_bare_skin``)."""
    size = int(person.shape[0])
    lm = landmarks.double().numpy()
    idx = feature_index_sets()
    oval = _hull_mask(lm[list(idx["oval"])], size)
    features = np.zeros_like(oval)
    for name in ("left_eye", "right_eye", "left_brow", "right_brow", "lips"):
        features |= _hull_mask(lm[list(idx[name])], size)
    face = oval & ~features
    up = lm[FOREHEAD] - lm[CHIN]
    up /= np.linalg.norm(up)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    height = lambda p: (xs - p[0]) * up[0] + (ys - p[1]) * up[1]  # noqa: E731  [S, S] along the face's up axis
    candidate = (person.numpy() >= 0.5) & ~oval & (height(lm[CHIN]) > 0)
    eyes = (lm[list(idx["left_eye"])].mean(0) + lm[list(idx["right_eye"])].mean(0)) / 2
    top = candidate & (height(eyes) > 0)  # beside and above the eyes: hair (or a hat, or ears)
    hair = top.copy()
    if top.sum() >= HAIR_MIN_PIXELS:  # below the eyes, only what has the colour of the hair above them
        rgb = image.numpy()
        ref = np.median(rgb[top], 0)
        spread = np.quantile(np.linalg.norm(rgb[top] - ref, axis=-1), HAIR_COLOUR_QUANTILE)
        hair |= candidate & (np.linalg.norm(rgb - ref, axis=-1) <= spread)
    return torch.from_numpy(face), torch.from_numpy(_without_bare_skin(hair, face, image.numpy()))


def _without_bare_skin(hair: np.ndarray, face: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A bald or shaved head: when the hair estimate's median colour lies within the face skin's median colour
    radius, it is skin, and only what differs from the skin more than its 90 % radius stays hair (stubble, dark
    patches). Hair of any other colour is left as it is."""
    if face.sum() < HAIR_MIN_PIXELS or hair.sum() < HAIR_MIN_PIXELS:
        return hair
    skin = np.median(rgb[face], 0)
    radius = np.linalg.norm(rgb[face] - skin, axis=-1)
    if np.linalg.norm(np.median(rgb[hair], 0) - skin) > np.quantile(radius, 0.5):
        return hair
    return hair & (np.linalg.norm(rgb - skin, axis=-1) > np.quantile(radius, HAIR_COLOUR_QUANTILE))


def _iou(a: Tensor, b: Tensor) -> float:  # boxes [4] (x0, y0, x1, y1)
    w = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp_min(0)
    h = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp_min(0)
    inter = float(w * h)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def _tile_starts(length: int, tile: int) -> list[int]:  # tiles of ``tile`` at half-tile steps, the last at the end
    starts = list(range(0, max(length - tile, 0) + 1, tile // 2))
    return starts if starts[-1] + tile >= length else [*starts, length - tile]


def tiled_face_boxes(detector: FaceDetector, rgb: np.ndarray) -> Tensor:
    """[K, 5] face boxes (as ``FaceDetector.face_boxes``) searched in half-overlapping tiles of half the short
    side, for faces too small in a large photo for the detectors' 128-192 px inputs; overlaps merged (IoU > 0.3:
    the higher score stays); by descending area."""
    h, w = rgb.shape[:2]
    tile = min(h, w) // 2
    found = []
    for y in _tile_starts(h, tile):
        for x in _tile_starts(w, tile):
            b = detector.face_boxes(np.ascontiguousarray(rgb[y:y + tile, x:x + tile]))
            found += [r + torch.tensor([x, y, x, y, 0.0]) for r in b]
    kept: list[Tensor] = []
    for r in sorted(found, key=lambda r: -float(r[4])):
        if all(_iou(r[:4], k[:4]) <= 0.3 for k in kept):
            kept.append(r)
    kept.sort(key=lambda r: -float((r[2] - r[0]) * (r[3] - r[1])))
    return torch.stack(kept) if kept else torch.zeros(0, 5)


def detect_subject(photo: PhotoImage, config: FaceDetectorConfig
                   ) -> tuple[FaceDetections, tuple[tuple[float, float, float, float], ...]] | None:
    """The subject's detection in photo pixels (landmarks, depth, box; the person mask of the whole photo) and the
    other faces' boxes; None when no face is found.

    Faces are found by the full-range box detector (several, small in the frame); the mesh then runs on a square
    of ``SUBJECT_CROP`` x the largest box, resampled to ``SUBJECT_PX``, so that it sees the face large whatever
    the photo's size. No box in a photo of ``TILE_MIN_SIDE`` px or more: searched again in tiles. Still none: the
    mesh on the whole photo is the fallback (its own detector)."""
    rgb = photo.rgb.numpy()
    with FaceDetector(config) as detector:
        whole = detector.detect(rgb)
        boxes = detector.face_boxes(rgb)
        if len(boxes) == 0 and min(photo.width, photo.height) >= TILE_MIN_SIDE:
            boxes = tiled_face_boxes(detector, rgb)
        if len(boxes) == 0:
            if not whole.found:
                return None
            others = whole.all_boxes[1:] if whole.all_boxes is not None else torch.zeros(0, 4)
            return whole, tuple(tuple(float(v) for v in b) for b in others)
        b = boxes[0, :4].double()
        side = SUBJECT_CROP * float((b[2] - b[0] + b[3] - b[1]) / 2)
        scale = SUBJECT_PX / side
        offset = (SUBJECT_PX / 2 - scale * float(b[0] + b[2]) / 2, SUBJECT_PX / 2 - scale * float(b[1] + b[3]) / 2)
        near = detector.detect(warp(rgb, _affine(scale, 0.0, offset), SUBJECT_PX, 1.0))
    if not near.found:
        return None
    shift = torch.tensor(offset, dtype=torch.float64)
    back = lambda p: ((p.double() - shift) / scale).float()  # noqa: E731  crop pixels -> photo pixels
    det = FaceDetections(photo.width, photo.height, len(boxes), back(near.landmarks), near.depth / scale,
                         back(near.box.reshape(2, 2)).reshape(4), near.score, whole.mask, boxes[:, :4].clone())
    others = tuple(tuple(float(v) for v in o[:4]) for o in boxes[1:] if _iou(o[:4], det.box) < 0.3)
    return det, others


def align_photo(photo: Path | str | PhotoImage, rig: HeadRig, config: PhotoAlignConfig = PhotoAlignConfig()
                ) -> AlignedPhoto:
    """The photo aligned to ``config.convention`` with its camera in ``rig``'s head frame (see the module doc)."""
    t0 = time.perf_counter()
    if not isinstance(photo, PhotoImage):
        photo = read_photo(photo)
    subject = detect_subject(photo, config.detector)
    if subject is None:
        raise _refuse(photo, "no face found in the photo (nor is a face turned further than ~70 degrees, or a "
                             "drawing the detector does not take for a face)",
                      "use a photo that shows one face from the front (within ~45 degrees), eyes visible")
    det, others = subject
    lm, box = det.landmarks, det.box
    face_px = float((box[2] - box[0] + box[3] - box[1]) / 2)
    if face_px < config.min_face_px:
        raise _refuse(photo, f"the face is {face_px:.0f} px, under the {config.min_face_px:g} px the landmarks need",
                      f"use a photo where the face spans at least {config.min_face_px:g} px (a closer or larger one)")
    yaw = mesh_yaw_deg(lm, det.depth, rig)
    width_r = float((lm[RIGHT_EYE_OUTER] - lm[RIGHT_EYE_INNER]).norm())
    width_l = float((lm[LEFT_EYE_OUTER] - lm[LEFT_EYE_INNER]).norm())
    eye_ratio = max(width_r, width_l) / max(min(width_r, width_l), 1e-6)
    if abs(yaw) > config.max_yaw_deg or eye_ratio > config.max_eye_ratio:
        raise _refuse(photo, f"the face is turned too far for the landmark model (yaw {yaw:+.0f} degrees, one eye "
                             f"{eye_ratio:.1f}x as wide as the other; limits {config.max_yaw_deg:g} degrees, "
                             f"{config.max_eye_ratio:g}x)", "use a photo taken from the front (within ~45 degrees)")
    focal, focal_source = photo_focal(photo, config.focal_35mm_prior)
    pose = solve_head_pose(lm, rig, focal, photo.width, photo.height)
    if pose.median_px > config.max_reprojection_frac * face_px:
        raise _refuse(photo, f"the landmarks fit no head: median reprojection {pose.median_px:.1f} px on a "
                             f"{face_px:.0f} px face (a drawing, a cartoon or a distorted photo?)",
                      "use a photograph of a real face, not a drawing; undistort wide-angle photos")
    S = config.size
    scale, roll, offset = crop_placement(lm, box, config.convention, S, config.face_box_margin)
    A = _affine(scale, roll, offset)
    image = warp(photo.rgb.numpy(), A, S, 1.0)
    hint = det.mask if photo.alpha is None else det.mask * photo.alpha
    person = torch.from_numpy(np.clip(warp(hint.numpy(), A, S, 0.0), 0, 1))
    crop_lm = lm.double() @ torch.from_numpy(A[:, :2]).T + torch.from_numpy(A[:, 2])
    face_mask, hair_mask = face_and_hair_masks(crop_lm, person, torch.from_numpy(image))
    camera = similarity_camera(pose, photo.width, photo.height, scale, roll, offset, S)
    centre = np.linalg.solve(A[:, :2], np.array([S / 2, S / 2]) - A[:, 2])  # the crop's centre in the photo
    side = S / scale
    crop = CropBox(float(centre[0] - side / 2), float(centre[1] - side / 2), side, (photo.width, photo.height),
                   math.degrees(-roll))
    notes = [f"focal length: {focal_source} ({focal:.0f} px)",
             f"yaw {yaw:+.1f} degrees (MediaPipe mesh), {pose.yaw_deg():+.1f} (PnP); eye width ratio {eye_ratio:.2f}",
             f"PnP on {int(pose.used.sum())} rig landmarks: median {pose.median_px:.2f} px in the photo",
             f"aligned in {time.perf_counter() - t0:.2f} s"]
    if photo.orientation != 1:
        notes.append(f"EXIF orientation {photo.orientation} applied")
    if others:
        notes.append(f"{len(others)} other face(s) in the photo, not used: the largest face is the subject")
    if photo.alpha is not None:
        notes.append("the photo's alpha was composited on white and limits the person mask")
    return AlignedPhoto(torch.from_numpy(np.clip(image, 0, 1)).float(), person.float(), face_mask, hair_mask,
                        crop_lm.float(), camera, crop, config.convention, focal_source, photo.source, others,
                        tuple(notes), pnp_median_px=pose.median_px * scale, yaw_deg=yaw)
