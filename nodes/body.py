"""Body nodes: body models, motions (file, built-in, fitted to keypoints), smoothing, alignment."""

from __future__ import annotations

import json
import os

import torch

from ._common import (
    CATEGORY,
    CHAMP_BODY_MODEL,
    CHAMP_MOTION,
    SMPL_FOLDER,
    ChampNodeError,
    file_fingerprint,
    input_files,
    model_folder_paths,
    resolve_input_file,
)

OPEN_BODY = "open body (built-in, no SMPL files needed)"
SMPL_SUFFIXES = (".pkl", ".npz")
MOTION_SUFFIXES = (".npz",)
KEYPOINT_SUFFIXES = (".json",)


def _smpl_files() -> list[str]:
    import folder_paths

    files = [f for f in folder_paths.get_filename_list(SMPL_FOLDER) if f.lower().endswith(SMPL_SUFFIXES)]
    return [OPEN_BODY, *sorted(files)]


def _smpl_path(model: str) -> str:
    import folder_paths

    path = folder_paths.get_full_path(SMPL_FOLDER, model) if model.lower().endswith(SMPL_SUFFIXES) else None
    if path is None:
        raise ChampNodeError(f"SMPL file '{model}' not found in {' or '.join(model_folder_paths(SMPL_FOLDER))}: put "
                             "SMPL_NEUTRAL.pkl (smpl.is.tue.mpg.de) there and press R, or pick the built-in open body")
    return path


def _validation_message(check) -> bool | str:
    """VALIDATE_INPUTS' answer: True, or the ChampNodeError's message (shown by ComfyUI before running)."""
    try:
        check()
    except ChampNodeError as err:
        return str(err)
    return True


def _wrap_errors(what: str):
    class _Wrap:
        def __enter__(self):
            return self

        def __exit__(self, kind, err, tb):
            if err is not None and isinstance(err, ValueError) and not isinstance(err, ChampNodeError):
                raise ChampNodeError(f"{what}: {err}") from err
            return False

    return _Wrap()


class ChampLoadBodyModel:
    NODE_ID = "ChampLoadBodyModel"
    DISPLAY_NAME = "Champ Load Body Model"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Loads an SMPL body model (.pkl as downloaded from smpl.is.tue.mpg.de, or .npz) from models/smpl, or the "
        "pack's built-in open body (SMPL-compatible topology, no licence-restricted files). SMPL files are read "
        "with a restricted unpickler: no code in them runs."
    )
    RETURN_TYPES = (CHAMP_BODY_MODEL,)
    RETURN_NAMES = ("body_model",)
    OUTPUT_TOOLTIPS = ("The body model, for fitting and rendering.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": (_smpl_files(), {"tooltip": "SMPL file in models/smpl, or the built-in "
                                                                  "open body."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        return True if model == OPEN_BODY else _validation_message(lambda: _smpl_path(model))

    @classmethod
    def IS_CHANGED(cls, model):
        if model == OPEN_BODY:
            return OPEN_BODY
        try:
            return file_fingerprint(_smpl_path(model))
        except ChampNodeError:
            return model

    def load(self, model):
        from ..champ_core.body import model as model_module

        with _wrap_errors("Champ Load Body Model"):
            if model == OPEN_BODY:
                return (model_module.open_body_model(),)
            return (model_module.load_body_model(_smpl_path(model)),)


class ChampLoadMotion:
    NODE_ID = "ChampLoadMotion"
    DISPLAY_NAME = "Champ Load Motion"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Loads a motion file from ComfyUI's input folder: a Champ motion .npz (written by Champ Save Motion or "
        "`python -m champ_core render`: per-frame SMPL parameters in the camera frame, camera, fps) or an AMASS "
        ".npz (placed in front of a default 512 x 512 camera, resampled to `fps`)."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("Per-frame body parameters and camera.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion_file": (input_files(MOTION_SUFFIXES),
                                {"tooltip": "A .npz motion in ComfyUI's input folder (upload one with the button "
                                            "below), or one of the pack's examples."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "First frame to use."}),
                "frame_count": ("INT", {"default": 0, "min": 0, "max": 1_000_000,
                                        "tooltip": "Number of frames (0 = to the end)."}),
                "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 240.0,
                                  "tooltip": "Frame rate AMASS files are resampled to (Champ motions keep theirs)."}),
            },
            "optional": {
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "Body used to place AMASS motions (default: the open "
                                                             "body)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, motion_file):
        return _validation_message(lambda: resolve_input_file(motion_file, "motion file", MOTION_SUFFIXES))

    @classmethod
    def IS_CHANGED(cls, motion_file, **_):
        try:
            return file_fingerprint(resolve_input_file(motion_file, "motion file", MOTION_SUFFIXES))
        except ChampNodeError:
            return motion_file

    def load(self, motion_file, start_frame, frame_count, fps, body_model=None):
        from ..champ_core.body.model import open_body_model
        from ..champ_core.body.sources import builtin_or_file

        path = resolve_input_file(motion_file, "motion file", MOTION_SUFFIXES)
        with _wrap_errors("Champ Load Motion"):
            motion = builtin_or_file(path, body_model if body_model is not None else open_body_model(), fps=fps)
            if start_frame >= motion.num_frames:
                raise ChampNodeError(f"Champ Load Motion: start_frame {start_frame} is past the motion's "
                                     f"{motion.num_frames} frames")
            stop = None if frame_count == 0 else start_frame + frame_count
            return (motion.slice(start_frame, stop),)


class ChampLoadKeypoints:
    NODE_ID = "ChampLoadKeypoints"
    DISPLAY_NAME = "Champ Load Keypoints (JSON)"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Loads 2D keypoints from a JSON file in ComfyUI's input folder, in the POSE_KEYPOINT format that "
        "comfyui_controlnet_aux's DWPose/OpenPose nodes output and save (a list of frames, each with people "
        "and canvas size). OpenPose-18, COCO-17, BODY_25 and DWPose-133 layouts are accepted."
    )
    RETURN_TYPES = ("POSE_KEYPOINT",)
    RETURN_NAMES = ("pose_keypoint",)
    OUTPUT_TOOLTIPS = ("The keypoints, for Champ Fit Motion / Champ Fit Reference.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"keypoint_file": (input_files(KEYPOINT_SUFFIXES),
                                               {"tooltip": "POSE_KEYPOINT JSON in ComfyUI's input folder (upload "
                                                           "one with the button below), or one of the pack's "
                                                           "examples."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, keypoint_file):
        return _validation_message(lambda: resolve_input_file(keypoint_file, "keypoint file", KEYPOINT_SUFFIXES))

    @classmethod
    def IS_CHANGED(cls, keypoint_file):
        try:
            return file_fingerprint(resolve_input_file(keypoint_file, "keypoint file", KEYPOINT_SUFFIXES))
        except ChampNodeError:
            return keypoint_file

    def load(self, keypoint_file):
        path = resolve_input_file(keypoint_file, "keypoint file", KEYPOINT_SUFFIXES)
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ChampNodeError(f"Champ Load Keypoints: {keypoint_file} is not valid JSON ({err})") from err
        from ..champ_core.body import keypoints

        with _wrap_errors("Champ Load Keypoints"):
            keypoints.parse_pose_keypoint(data)  # validates now, with a clear message
        return (data if isinstance(data, list) else [data],)


def _optimisable(body):
    """A copy of the body model usable by the optimiser.

    ComfyUI runs nodes under torch.inference_mode(), and a model loaded by another node holds
    inference tensors, which autograd refuses; the copy is made with inference mode off.
    """
    from ..champ_core.body import model

    return model.body_model_from_arrays(body.to_arrays(), num_betas=body.num_betas, name=getattr(body, "name", "smpl"))


def _fit_config(iterations: int, base=None):
    """The library's fitting defaults (`base`, default FitConfig()) with the node's iteration count."""
    import dataclasses

    from ..champ_core.body import fitting

    return dataclasses.replace(base or fitting.FitConfig(), iterations=int(iterations))


def _default_iterations(reference: bool) -> int:
    from ..champ_core.body import fitting

    return (fitting.REFERENCE_FIT_CONFIG if reference else fitting.FitConfig()).iterations


class ChampFitMotion:
    NODE_ID = "ChampFitMotion"
    DISPLAY_NAME = "Champ Fit Motion (Keypoints)"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Fits an SMPL motion (shared body shape, per-frame pose and position) to a tracked person's 2D "
        "keypoints, e.g. DWPose's POSE_KEYPOINT for a driving video. The camera is HMR2's for the keypoints' "
        "canvas. Frames where the person is missing are interpolated."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The fitted motion.",)
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Keypoints per frame (DWPose / OpenPose JSON)."}),
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "From Champ Load Body Model."}),
                "fps": ("FLOAT", {"default": 30.0, "min": 1.0, "max": 240.0, "tooltip": "Frame rate of the video."}),
                "iterations": ("INT", {"default": _default_iterations(False), "min": 1, "max": 5000,
                                       "tooltip": "Optimiser iterations (more = closer fit, slower)."}),
                "person": ("INT", {"default": -1, "min": -1, "max": 100,
                                   "tooltip": "Which person: -1 = the largest in the first frame, else an index."}),
            }
        }

    def fit(self, pose_keypoint, body_model, fps, iterations, person):
        from ..champ_core.body import fitting
        from ..champ_core.pose.format import parse_with_feet
        from ._common import comfy_progress

        with _wrap_errors("Champ Fit Motion"), torch.inference_mode(False), torch.enable_grad():
            # whole-body input (DWPose's 133 points): feet and hands are fitted too
            pose, feet = parse_with_feet(pose_keypoint, person="largest" if person < 0 else person)
            progress = comfy_progress(iterations)
            motion = fitting.fit_keypoints(pose, _optimisable(body_model), fps=fps, config=_fit_config(iterations),
                                           progress=lambda done, total: progress(done, total), feet=feet)
        return (motion,)


class ChampFitReference:
    NODE_ID = "ChampFitReference"
    DISPLAY_NAME = "Champ Fit Reference (Keypoints)"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Fits SMPL to the reference image's person from its keypoints (one frame of POSE_KEYPOINT, e.g. "
        "DWPose on the reference image): body shape, pose and position, for aligning a motion to the reference."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("reference_body",)
    OUTPUT_TOOLTIPS = ("A one-frame motion of the reference person.",)
    FUNCTION = "fit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Keypoints of the reference image (first frame used)."}),
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "From Champ Load Body Model."}),
                "iterations": ("INT", {"default": _default_iterations(True), "min": 1, "max": 5000,
                                       "tooltip": "Optimiser iterations."}),
            }
        }

    def fit(self, pose_keypoint, body_model, iterations):
        from ..champ_core.body import fitting, keypoints

        with _wrap_errors("Champ Fit Reference"), torch.inference_mode(False), torch.enable_grad():
            pose = keypoints.parse_pose_keypoint(pose_keypoint)
            motion = fitting.fit_reference(pose, _optimisable(body_model),
                                           config=_fit_config(iterations, fitting.REFERENCE_FIT_CONFIG))
        return (motion,)


def _builtin_names():
    from ..champ_core.body.motions import BUILTIN_MOTIONS

    return tuple(BUILTIN_MOTIONS)


class ChampBuiltinMotion:
    NODE_ID = "ChampBuiltinMotion"
    DISPLAY_NAME = "Champ Built-in Motion"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "A built-in procedural motion (walk, wave, turn, dance, idle), placed in front of a camera of width x "
        "height (HMR2's focal length), the body centred and filling most of the frame. No files needed."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The motion.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "The body the motion is placed for."}),
                "motion": (_builtin_names(), {"tooltip": "Which built-in clip."}),
                "seconds": ("FLOAT", {"default": 2.0, "min": 0.1, "max": 60.0, "step": 0.1,
                                      "tooltip": "Length of the clip."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 120.0, "tooltip": "Frames per second."}),
                "width": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 8, "tooltip": "Camera image width."}),
                "height": ("INT", {"default": 512, "min": 16, "max": 4096, "step": 8,
                                   "tooltip": "Camera image height."}),
            }
        }

    def make(self, body_model, motion, seconds, fps, width, height):
        from ..champ_core.body.motions import builtin_motion, default_camera

        with _wrap_errors("Champ Built-in Motion"):
            return (builtin_motion(motion, body_model, seconds=seconds, fps=fps,
                                   camera=default_camera(width, height)),)


class ChampAlignMotion:
    NODE_ID = "ChampAlignMotion"
    DISPLAY_NAME = "Champ Align Motion to Reference"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Transfers a motion onto the reference person: their body shape, their camera, their place in the "
        "frame. The motion's own root movement is kept (scaled to the reference's apparent size) or pinned at "
        "the reference's position (the reference implementation's behaviour)."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The motion in the reference's camera, with the reference's shape.",)
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": (CHAMP_MOTION, {"tooltip": "The driving motion."}),
                "reference_body": (CHAMP_MOTION, {"tooltip": "From Champ Fit Reference (one frame)."}),
                "body_model": (CHAMP_BODY_MODEL, {"tooltip": "The body model both were fitted with."}),
                "root_motion": (("follow", "pin"), {"default": "follow",
                                                    "tooltip": "follow: keep the motion's own travel; pin: stay "
                                                               "at the reference's position."}),
                "orientation": (("motion", "reference"), {"default": "motion",
                                                          "tooltip": "Keep the motion's facing, or turn it to face "
                                                                     "where the reference person faces."}),
                "use_reference_shape": ("BOOLEAN", {"default": True, "tooltip": "Use the reference's body shape "
                                                                                  "(betas)."}),
                "override_figure_scale": ("BOOLEAN", {"default": False, "tooltip": "Set the second shape "
                                                                                   "coefficient to figure_scale."}),
                "figure_scale": ("FLOAT", {"default": 0.0, "min": -10.0, "max": 10.0, "step": 0.1,
                                           "tooltip": "-10 very heavy ... +10 very slim (when overridden)."}),
            }
        }

    def align(self, motion, reference_body, body_model, root_motion, orientation, use_reference_shape,
              override_figure_scale, figure_scale):
        from ..champ_core.body.alignment import AlignOptions, align_to_reference

        options = AlignOptions(root_motion=root_motion, orientation=orientation,
                               figure_scale=float(figure_scale) if override_figure_scale else None,
                               use_reference_betas=bool(use_reference_shape))
        with _wrap_errors("Champ Align Motion"):
            return (align_to_reference(motion, reference_body, body_model, options),)


class ChampSmoothMotion:
    NODE_ID = "ChampSmoothMotion"
    DISPLAY_NAME = "Champ Smooth Motion"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Smooths a motion over time (joint rotations filtered on the rotation group, translation linearly; body "
        "shape unchanged; end frames kept). 'reference' is the reference implementation's 5-tap key smoothing, "
        "'gaussian' a Gaussian of `strength` frames."
    )
    RETURN_TYPES = (CHAMP_MOTION,)
    RETURN_NAMES = ("motion",)
    OUTPUT_TOOLTIPS = ("The smoothed motion.",)
    FUNCTION = "smooth"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": (CHAMP_MOTION, {"tooltip": "The motion to smooth."}),
                "method": (("gaussian", "reference", "none"), {"default": "gaussian",
                                                               "tooltip": "Filter: gaussian, Champ's reference "
                                                                          "kernel, or none."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1,
                                       "tooltip": "Gaussian standard deviation in frames (gaussian only)."}),
            }
        }

    def smooth(self, motion, method, strength):
        from ..champ_core.body.smoothing import smooth_motion

        with _wrap_errors("Champ Smooth Motion"):
            return (smooth_motion(motion, method, strength),)


class ChampSaveMotion:
    NODE_ID = "ChampSaveMotion"
    DISPLAY_NAME = "Champ Save Motion"
    CATEGORY = f"{CATEGORY}/body"
    DESCRIPTION = (
        "Saves a motion (per-frame SMPL parameters, camera, fps) as a .npz in ComfyUI's output folder, e.g. a "
        "fitted driving video to reuse with Champ Load Motion (copy it into the input folder) or the CLI."
    )
    RETURN_TYPES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": (CHAMP_MOTION, {"tooltip": "The motion to save."}),
                "filename_prefix": ("STRING", {"default": "champ/motion", "tooltip": "Path prefix inside the "
                                                                                     "output folder."}),
            }
        }

    def save(self, motion, filename_prefix):
        import folder_paths

        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory()
        )
        filename = f"{name}_{counter:05}_.npz"
        motion.save(os.path.join(folder, filename))  # written to a temporary name, then renamed
        return {"ui": {"motions": [{"filename": filename, "subfolder": subfolder, "type": "output",
                                    "frames": int(motion.num_frames)}]}}


NODES = [ChampLoadBodyModel, ChampLoadMotion, ChampBuiltinMotion, ChampLoadKeypoints, ChampFitMotion,
         ChampFitReference, ChampAlignMotion, ChampSmoothMotion, ChampSaveMotion]
