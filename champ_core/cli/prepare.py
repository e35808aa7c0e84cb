"""`python -m champ_core prepare VIDEOS OUT`: videos of people -> Champ training data (see docs/prepare.md)."""

from __future__ import annotations

HELP = "videos (mp4 or frame folders) -> pose -> SMPL fit -> guidance maps in the training layout, plus motion.npz"


def add_arguments(parser) -> None:
    parser.add_argument("videos", metavar="VIDEOS", help="a video file, a folder of frames, or a folder holding "
                        "video files and/or frame folders")  # fmt: skip
    parser.add_argument("out", metavar="OUT", help="output root: OUT/<video>/images, depth, normal, semantic_map, "
                        "dwpose, mask, human_bbox.json, motion.npz, .done")  # fmt: skip
    parser.add_argument("--keypoints", metavar="DIR", help="read DIR/<video>.json (POSE_KEYPOINT, any detector) "
                        "instead of running DWPose")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--pose-models", metavar="DIR", action="append", default=[],
                        help="folder with yolox_l.onnx and dw-ll_ucoco_384.onnx (repeatable; also searched: "
                        "$CHAMP_POSE_MODELS and the ComfyUI install around the pack)")  # fmt: skip
    parser.add_argument("--person", type=int, default=0, help="who to track: 0 = the largest person in the first "
                        "frame with anybody, 1 = the next largest, ...")  # fmt: skip
    parser.add_argument("--body-model", metavar="PATH", help="SMPL model file or folder (default: the built-in open body)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of frame folders (video files carry theirs)")
    parser.add_argument("--smoothing", default="gaussian", help="none, reference or gaussian (default)")
    parser.add_argument("--smoothing-strength", type=float, default=1.0, help="Gaussian sigma in frames (default 1)")
    parser.add_argument("--image-format", default="png", choices=("png", "jpg"), help="format of images/ (guidance is PNG)")


def _writable_root(out, flag: str):
    import os
    from pathlib import Path

    from . import CommandError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{flag} {out}: is a file; give an output folder")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {out}: {probe} is not writable; choose another output folder or fix its permissions")
    return out


def run(args) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..body.smoothing import SMOOTHING_METHODS
    from ..train.prepare import PrepareError, PrepareOptions, find_sources, is_done, prepare_videos
    from . import CommandError
    from .errors import check_device, check_input_dir, check_positive

    if not Path(args.videos).exists():
        raise CommandError(f"VIDEOS {args.videos}: does not exist; give a video file, a frame folder or a folder of them")
    out = _writable_root(args.out, "OUT")
    check_positive(args.fps, "--fps")
    check_positive(args.smoothing_strength, "--smoothing-strength", allow_zero=True)
    if args.smoothing not in SMOOTHING_METHODS:
        raise CommandError(f"--smoothing {args.smoothing}: choose one of {', '.join(SMOOTHING_METHODS)}")
    if args.person < 0:
        raise CommandError(f"--person {args.person}: must be 0 (the largest person) or more")
    keypoints = check_input_dir(args.keypoints, "--keypoints", "keypoint folder") if args.keypoints else None
    device = str(check_device(args.device))
    try:
        sources = find_sources(args.videos)
    except PrepareError as exc:
        raise CommandError(f"VIDEOS {exc}") from exc

    from ..body.model import load_body_model, open_body_model

    body = load_body_model(args.body_model) if args.body_model else open_body_model()
    detector = None
    todo = [s for s in sources if not is_done(out, s.name)]
    if keypoints is None and todo:
        from ..pose import DWPose, PoseModelError

        try:
            detector = DWPose.from_folders(args.pose_models, device=device)
        except PoseModelError as exc:
            raise CommandError(str(exc)) from exc
    options = PrepareOptions(device=device, person=args.person, smoothing=args.smoothing,
                             smoothing_strength=args.smoothing_strength, image_format=args.image_format, fps=args.fps)
    overall = tqdm(total=len(sources), desc="videos", unit="video", position=0)
    bars: dict[str, tqdm] = {}

    def on_video(source):
        for bar in bars.values():
            bar.close()
        bars.clear()

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=f"{source.name} {stage}", unit="step" if stage == "fit"
                                         else "frame", position=1, leave=False)
            bar.total = total
            bar.update(done - bar.n)

        return progress

    def log(text: str) -> None:
        for bar in bars.values():
            bar.close()
        bars.clear()
        tqdm.write(text)
        overall.update(1)

    body = body.to(device) if device.startswith("cuda") else body
    summary = prepare_videos(sources, out, body, options, detector, keypoints, on_video, log=log)
    for bar in bars.values():
        bar.close()
    overall.close()
    print(f"prepare: {summary.line()}")
    return 1 if summary.failed else 0

