"""SMPL bodies and motion: body models, motion sources, keypoint fitting, smoothing, alignment.

Modules: `model` (BodyModel, LBS, safe SMPL loading, the open body), `motion` (Motion),
`keypoints` (POSE_KEYPOINT parsing, PoseFrames, projection), `fitting` (keypoints -> SMPL),
`smoothing`, `alignment` (transfer onto the reference person), `motions` (built-in clips),
`sources` (AMASS, the reference implementation's result files), `evaluation` (metrics and
synthetic test sequences). See docs/body.md.
"""
