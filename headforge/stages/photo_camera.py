"""The photo's camera: focal length (EXIF or a documented prior), head pose by PnP on the rig's landmarks, yaw.

Focal length, in order (``photo_focal``):
1. EXIF ``FocalLengthIn35mmFilm``: f_px = f35 / 43.27 mm x the image diagonal in pixels. The 35 mm equivalent is
   defined on the 36 x 24 mm frame's diagonal (43.27 mm; CIPA DC-008), which also holds for crops of other aspect.
2. EXIF ``FocalLength`` with the focal-plane resolution (pixels per mm of the sensor): f_px = f_mm x px/mm.
3. The prior: a 50 mm full-frame equivalent (f_px = 50 / 43.27 x diagonal; 40 degrees diagonal field of view,
   ~0.96 x the long side). Portraits are taken with 35-85 mm equivalents (phones' 26 mm main cameras are
   usually cropped or used from >= 40 cm, which a 50 mm prior places within ~15 % in depth). An error in f
   changes the solved distance in proportion; the reprojection of the landmarks barely moves (weak perspective).

Pose (``solve_head_pose``): OpenCV ``solvePnP`` (SQPnP, then Levenberg-Marquardt refinement) of the detected
2D landmarks against the rig's 478 MediaPipe landmarks on its neutral template, restricted to the embedding's
reliable points. The world is the rig's head frame (metres, +y up, face +z), the result OpenCV world-to-camera.

Yaw (``mesh_yaw_deg``): similarity Procrustes of MediaPipe's own 3D mesh (x, y pixels, z = depth) onto the rig's
landmarks. It is the better profile gauge: PnP on a neutral template under-reads turned heads. + = the camera
on the subject's left (+x), as ``landmark_embedding.EmbedConfig.yaws``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from headforge.captures.photo import PhotoImage
from headforge.geometry.cameras import Cameras
from headforge.representations.rig.deform import landmarks as rig_landmarks
from headforge.representations.rig.head_rig import HeadRig, LandmarkSet

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27


@dataclass(frozen=True, eq=False)
class HeadPose:
    world_to_camera: Tensor  # [4, 4] float64 OpenCV, world = the rig's head frame
    focal_px: float  # of the image the landmarks are in
    residuals_px: Tensor  # [P] float64 reprojection error of the points used
    used: Tensor  # [478] bool: the landmarks the pose was solved on

    @property
    def median_px(self) -> float:
        return float(self.residuals_px.median())

    def yaw_deg(self) -> float:
        """Azimuth of the camera around the head (+ on the subject's left), from the solved rotation."""
        return _yaw_of(self.world_to_camera[:3, :3].numpy())


def photo_focal(photo: PhotoImage, prior_35mm: float) -> tuple[float, str]:
    """(f in pixels of the upright photo, where it came from); see the module doc for the order."""
    diag = math.hypot(photo.width, photo.height)
    if photo.focal.focal_35mm is not None:
        f35 = photo.focal.focal_35mm
        return f35 / FULL_FRAME_DIAGONAL_MM * diag, f"EXIF 35 mm equivalent {f35:g} mm"
    if photo.focal.focal_px is not None:
        return photo.focal.focal_px, f"EXIF focal length {photo.focal.focal_mm:g} mm with the focal-plane resolution"
    why = " (EXIF FocalLength without a sensor size)" if photo.focal.focal_mm is not None else ""
    return prior_35mm / FULL_FRAME_DIAGONAL_MM * diag, f"prior: {prior_35mm:g} mm full-frame equivalent{why}"


def template_landmarks(rig: HeadRig) -> tuple[Tensor, Tensor]:
    """The rig's 478 MediaPipe landmarks on its neutral template [478, 3] float64 (head frame, metres) and which
    are reliable [478] bool (all when the embedding does not say)."""
    points = rig_landmarks(rig, rig.template[None].double(), LandmarkSet.MEDIAPIPE_478)[0]
    emb = rig.landmarks[LandmarkSet.MEDIAPIPE_478]
    reliable = torch.ones(len(points), dtype=torch.bool) if emb.reliable is None else emb.reliable.bool()
    return points, reliable


def project(world_to_camera: Tensor, focal: float, cx: float, cy: float, points: Tensor) -> Tensor:
    """[4, 4] OpenCV world-to-camera, pinhole (f, cx, cy), points [P, 3] -> pixels [P, 2] (pixel-centre convention
    of geometry/cameras.py: the centre of pixel i is i + 0.5)."""
    cam = points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    return torch.stack([focal * cam[:, 0] / cam[:, 2] + cx, focal * cam[:, 1] / cam[:, 2] + cy], -1)


def solve_head_pose(points2d: Tensor, rig: HeadRig, focal: float, width: int, height: int) -> HeadPose:
    """PnP of the detected landmarks [478, 2] (pixels) on the rig's reliable template landmarks."""
    points3d, used = template_landmarks(rig)
    used = used & torch.isfinite(points2d).all(-1)
    obj = points3d[used].numpy().astype(np.float64)
    img = points2d[used].double().numpy()
    # PnP is continuous: points and principal point in one convention (headforge's: the image centre is W / 2)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise RuntimeError("solvePnP (SQPnP) found no pose")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, None, rvec, tvec)
    w2c = torch.eye(4, dtype=torch.float64)
    w2c[:3, :3] = torch.from_numpy(cv2.Rodrigues(rvec)[0])
    w2c[:3, 3] = torch.from_numpy(tvec.reshape(3))
    res = (project(w2c, focal, width / 2, height / 2, points3d[used]) - points2d[used].double()).norm(dim=-1)
    return HeadPose(w2c, focal, res, used)


def _yaw_of(R: np.ndarray) -> float:  # [3, 3] head -> camera rotation
    d = R[:, 2]  # the head's +z (its facing direction) in camera axes (x right, y down, z forward)
    return math.degrees(math.atan2(-d[0], -d[2]))


def mesh_yaw_deg(points2d: Tensor, depth: Tensor, rig: HeadRig) -> float:
    """Yaw of MediaPipe's 3D mesh ([478, 2] pixels, [478] depth in pixels) by Procrustes on the rig's landmarks."""
    points3d, used = template_landmarks(rig)
    Q = torch.cat([points2d.double(), depth.double()[:, None]], -1)[used].numpy()
    P = points3d[used].numpy()
    U, _, Vt = np.linalg.svd((Q - Q.mean(0)).T @ (P - P.mean(0)))
    D = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(U @ Vt)))])
    return _yaw_of(U @ D @ Vt)


def similarity_camera(pose: HeadPose, width: int, height: int, scale: float, roll_rad: float,
                      offset: tuple[float, float], out_size: int) -> Cameras:
    """The camera of a crop: crop pixel u' = scale * Rot(roll) u + offset (original pixels u, centre convention).

    With fx = fy the image rotation folds into the extrinsics: K' Rz = A K, where A is the 2D similarity and
    Rz the rotation about the optical axis, so the crop stays a plain pinhole camera."""
    c, s = math.cos(roll_rad), math.sin(roll_rad)
    R2 = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    centre = scale * (R2 @ torch.tensor([width / 2, height / 2], dtype=torch.float64)) + torch.tensor(offset)
    Rz = torch.eye(4, dtype=torch.float64)
    Rz[:2, :2] = R2
    w2c = Rz @ pose.world_to_camera
    f = scale * pose.focal_px
    return Cameras.create(w2c.float(), f, f, float(centre[0]), float(centre[1]), out_size, out_size)
