"""Parametric head rigs: one `HeadRig` type (template, regions, ARKit expression basis, skeleton, skinning,
landmark embeddings), differentiable deformation functions, and loaders for each source (ICT-FaceKit:
`ict_facekit.py`; FLAME from the user's own file: `flame.py`)."""
