"""The typed hand-offs of the single-photo path (photo -> aligned photo -> fitted, completed head -> generated views).

``AlignedPhoto`` is what preprocessing gives (``stages/photo_align.py``): the aligned crop, its masks, its 478
MediaPipe landmarks and one camera in the crop's pixels, whose world is the head frame of the rig the camera was
solved against (PnP on the rig's landmarks). ``PhotoFit`` is the one-view fit with its completed texture and hair
(``stages/photo_fit.py``, ``texture_complete.py``, ``photo_hair.py``); ``PhotoFit.avatar()`` is the completed head every
multi-view generator renders or conditions on (``stages/multiview.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
from torch import Tensor

from headforge.captures.capture import Capture, Split, View
from headforge.geometry.cameras import Cameras
from headforge.representations.rig.head_rig import HeadRig
from headforge.stages.avatar import Avatar, BoundSplats
from headforge.stages.rig_params import RigParams
from headforge.stages.rig_texture import RigTexture

__all__ = ["AlignConvention", "AlignedPhoto", "CropBox", "PhotoFit"]


class AlignConvention(StrEnum):
    """Where the face sits in the aligned square crop (the conventions of the generators that take it)."""

    FACELIFT = "facelift"  # FaceLift's 512 canvas (its face size and centre, documented in photo_align.py)
    PANOHEAD = "panohead"  # PanoHead's crop for its cameras
    FACE_BOX = "face-box"  # the face box scaled by a margin, centred (no generator's convention)


@dataclass(frozen=True)
class CropBox:
    """The crop in the (EXIF-rotated) original photo: its top-left corner and side, in original pixels."""

    x0: float
    y0: float
    side: float
    original_size: tuple[int, int]  # (width, height) after EXIF rotation
    roll_deg: float = 0.0  # the crop's x axis is the photo's turned by this (towards +y) about the box centre


@dataclass(frozen=True, eq=False)
class AlignedPhoto:
    image: Tensor  # [S, S, 3] float32 sRGB in [0, 1], the aligned crop
    person_mask: Tensor  # [S, S] float32 in [0, 1]: the segmented person (selfie segmentation)
    face_mask: Tensor  # [S, S] bool: face skin (inside the face oval, without eyes, brows and mouth)
    hair_mask: Tensor  # [S, S] bool: the hair estimate (person, not face skin, above the chin line)
    landmarks: Tensor  # [478, 2] float32 pixels in the crop, MediaPipe face-mesh order (iris points 468..477)
    camera: Cameras  # one camera in the crop's pixels; its world is the rig's head frame (metres, +y up, face +z)
    crop: CropBox
    convention: AlignConvention
    focal_source: str  # where the focal length came from ("EXIF 35 mm equivalent 26 mm", "prior: ...")
    source: Path | None = None  # the photo file
    other_faces: tuple[tuple[float, float, float, float], ...] = ()  # other faces' boxes (x0, y0, x1, y1), original px
    notes: tuple[str, ...] = field(default_factory=tuple)  # what a user should know (others faces, EXIF, ...)
    pnp_median_px: float = float("nan")  # median reprojection of the rig's landmarks by ``camera``, crop pixels
    yaw_deg: float = float("nan")  # the head's yaw in the photo (+: camera on the subject's left), MediaPipe mesh

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    def capture(self) -> Capture:
        """The photo as a one-view in-memory capture (image with the person mask as alpha); nothing held out."""
        rgba = torch.cat([self.image, self.person_mask[..., None]], -1)
        return Capture(self.camera, (View(None),), Split((0,), ()), images=rgba[None])


@dataclass(frozen=True, eq=False)
class PhotoFit:
    """The rig fitted to one photo, completed: the neutral head every later stage starts from."""

    rig: HeadRig
    rig_spec: str
    params: RigParams  # one frame: the photo's expression and pose; identity, offsets, similarity (world = head frame)
    texture: RigTexture  # the completed texture (photo + mirror + recoloured template, blended)
    hair: BoundSplats  # the hair layer bound to the scalp (LayerCode.HAIR)
    landmark_median_px: float  # reprojection of the fitted landmarks on the aligned photo

    def neutral(self) -> RigParams:
        """The subject without the photo's expression and head pose (identity and offsets kept)."""
        return self.params.posed()

    def avatar(self, sh_degree: int = 0) -> Avatar:
        """The completed head as an avatar: the textured mesh face layer under the hair Gaussians."""
        return Avatar(self.rig, self.rig_spec, self.params, self.texture, self.hair, sh_degree)
