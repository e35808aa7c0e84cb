"""DWPose plumbing on small random ONNX graphs with the real files' signatures; known cases of the
pre- and post-processing; model-file search; tracking; POSE_KEYPOINT output; TorchScript."""

from __future__ import annotations

import numpy as np
import pytest

from champ_core.body.keypoints import parse_pose_keypoint
from champ_core.pose import DWPose, PoseDetectionError, PoseModelError, find_pose_models
from champ_core.pose import processing as P
from champ_core.pose.files import comfyui_folders
from champ_core.pose.format import feet_for_tracked, frame_dict, wholebody_to_openpose
from champ_core.pose.tracking import track_person

pytest.importorskip("onnx")
from pose_graphs import make_dwpose, make_yolox, yolox_rows  # noqa: E402

CROP_CENTRE = np.array([144.0, 192.0])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two people planted in the detector (a big one right, a small one left), every keypoint at
    the crop centre except a few at known crop points."""
    folder = tmp_path_factory.mktemp("pose_models")
    make_yolox(folder / "yolox_l.onnx", planted=yolox_rows([(400, 320, 160, 400, 0.9), (120, 400, 80, 200, 0.8)]))
    crop = np.tile(CROP_CENTRE, (133, 1))
    crop[9] = [30.25, 40.75]  # left wrist (COCO 9)
    crop[17] = [200.0, 380.0]  # left big toe
    make_dwpose(folder / "dw-ll_ucoco_384.onnx", points_crop=crop)
    return folder, crop


def test_simcc_known_case_and_back():
    box = np.array([100.0, 50.0, 300.0, 450.0])
    centre, scale = P.box_center_scale(box)
    # 200 x 400 padded by 1.25 = 250 x 500, widened to the 3:4 input aspect: 375 x 500
    assert np.allclose(centre, [200, 250]) and np.allclose(scale, [375, 500])
    pixel = np.array([250.0, 300.0])
    crop = P.image_to_crop(pixel, centre, scale)
    assert np.allclose(crop, [(250 - 12.5) / 375 * 288, 300 / 500 * 384])
    index = P.simcc_index(crop)
    assert index.tolist() == [364, 460]
    sx, sy = np.zeros((1, 1, 576)), np.zeros((1, 1, 768))
    sx[0, 0, 364], sy[0, 0, 460] = 0.9, 0.7
    locs, scores = P.simcc_decode(sx, sy)
    assert locs[0, 0].tolist() == [182.0, 230.0] and scores[0, 0] == pytest.approx(0.7)
    back = P.crop_to_image(locs[0, 0], centre, scale)
    bin_px = scale / (np.array(P.ESTIMATOR_INPUT) * P.SIMCC_SPLIT)  # one SimCC bin in image pixels
    assert np.all(np.abs(back - pixel) <= bin_px + 1e-9)
    # no positive response: location -1
    locs, _ = P.simcc_decode(-np.ones((1, 1, 576)), np.ones((1, 1, 768)))
    assert locs[0, 0].tolist() == [-1.0, -1.0]


def test_crop_warp_puts_a_pixel_where_the_mapping_says():
    image = np.zeros((480, 400, 3), np.uint8)
    image[300, 250] = 255  # pixel (x=250, y=300): its centre is (250.5, 300.5)
    centre, scale = P.box_center_scale(np.array([100.0, 50.0, 300.0, 450.0]))
    crop = P.crop_person(image, centre, scale)
    assert crop.shape == (3, 384, 288) and crop.dtype == np.float32
    assert np.allclose(crop[:, 0, 0], -P.MEAN_RGB / P.STD_RGB)  # black, normalised
    y, x = np.unravel_index(crop[0].argmax(), crop[0].shape)
    # OpenCV's warp maps pixel indices (not centres): index 250 -> (250 - 12.5) * 288 / 375
    expected = P.image_to_crop(np.array([250.0, 300.0]), centre, scale)
    assert abs(x - expected[0]) <= 1 and abs(y - expected[1]) <= 1


def test_letterbox_and_yolox_decoding():
    image = np.zeros((720, 1280, 3), np.uint8)
    image[..., 0] = 255  # red in RGB: the detector gets BGR, so channel 2
    batch, ratio = P.letterbox(image)
    assert ratio == 0.5 and batch.shape == (1, 3, 640, 640)
    assert batch[0, 2, 0, 0] == 255 and batch[0, 0, 0, 0] == 0
    assert (batch[0, :, 360:, :] == P.PAD_VALUE).all() and (batch[0, :, :360, :] != P.PAD_VALUE).any()
    rows = yolox_rows([(300, 200, 100, 300, 0.81)])
    logits = rows.copy()
    logits[:, 4:] = 1 / (1 + np.exp(-rows[:, 4:]))
    boxes, scores = P.yolox_decode(logits, ratio)
    best = int(scores.argmax())
    assert scores[best] == pytest.approx(0.81, abs=1e-4)
    assert np.allclose(boxes[best], [500, 100, 700, 700], atol=1e-3)  # letterbox pixels / 0.5
    people = P.select_people(boxes, scores, 1280, 720)
    assert people.shape == (1, 5)
    with pytest.raises(ValueError, match="rows"):
        P.yolox_decode(logits[:100], ratio)


def test_nms_known_case():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], dtype=float)
    scores = np.array([0.8, 0.9, 0.5, 0.3])
    assert P.nms(boxes, scores, 0.45).tolist() == [1, 2]
    assert P.box_iou(boxes[0], boxes[1:2])[0] == pytest.approx(81 / 119)


def test_detector_on_random_graphs(models):
    folder, crop = models
    model = DWPose(find_pose_models([folder]))
    image = np.zeros((480, 640, 3), np.uint8)  # letterbox ratio 1
    people = model(image)
    assert len(people) == 2
    big = max(people, key=lambda p: (p.box[2] - p.box[0]) * (p.box[3] - p.box[1]))
    assert np.allclose(big.box, [320, 120, 480, 480], atol=2.0) and big.score == pytest.approx(0.9, abs=0.02)
    for person in people:
        centre, scale = P.box_center_scale(person.box)
        kp = person.keypoints
        assert kp.shape == (133, 3) and (kp[:, 2] > 0.9).all()
        # the crop centre is the box centre; other points follow the crop mapping
        assert np.allclose(kp[0, :2], centre, atol=0.5 * scale[0] / 288 + 1e-6)
        assert np.allclose(kp[9, :2], P.crop_to_image(np.floor(crop[9] * 2) / 2, centre, scale), atol=1e-4)
    # empty frame: no planted rows scoring -> no one
    (folder / "empty").mkdir(exist_ok=True)
    make_yolox(folder / "empty" / "yolox_l.onnx")
    empty = DWPose(find_pose_models([folder / "empty", folder]))
    assert empty(image) == []
    with pytest.raises(PoseDetectionError, match="no person detected in any of the 2 frames"):
        empty.detect_sequence([image, image])
    with pytest.raises(PoseDetectionError, match="RGB uint8"):
        model(image.astype(np.float32))


def test_fixed_and_dynamic_batch_sizes_agree(models, tmp_path):
    folder, crop = models
    make_dwpose(tmp_path / "dw-ll_ucoco_384.onnx", points_crop=crop, batch="N")
    fixed = DWPose(find_pose_models([folder]))
    dynamic = DWPose(find_pose_models([tmp_path, folder]))
    assert fixed.estimator.batch == 1 and dynamic.estimator.batch is None
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 100, 200], [300, 50, 500, 470], [200, 100, 260, 180]], float)
    assert np.allclose(fixed.estimate(image, boxes), dynamic.estimate(image, boxes), atol=1e-5)


def test_torchscript_pose_network_matches_onnx(models, tmp_path):
    torch = pytest.importorskip("torch")
    folder, crop = models
    from pose_graphs import simcc_planted

    sx, sy = simcc_planted(crop)

    class Planted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sx = torch.nn.Parameter(torch.from_numpy(sx + 0.02)[None])
            self.sy = torch.nn.Parameter(torch.from_numpy(sy + 0.02)[None])

        def forward(self, x: torch.Tensor):
            assert x.shape[0] == 5
            n = x.shape[0]
            return self.sx.expand(n, -1, -1) + 0 * x.mean(), self.sy.expand(n, -1, -1) + 0 * x.mean()

    ts_dir = tmp_path / "ts"
    ts_dir.mkdir()
    torch.jit.save(torch.jit.script(Planted()), str(ts_dir / "dw-ll_ucoco_384_bs5.torchscript.pt"))
    files = find_pose_models([folder / "missing", ts_dir, folder / "det_only"] + [folder])
    assert files.estimator.parent == folder  # ONNX preferred when both exist
    files = type(files)(files.detector, ts_dir / "dw-ll_ucoco_384_bs5.torchscript.pt")
    ts = DWPose(files)
    assert ts.estimator.batch == 5
    onnx = DWPose(find_pose_models([folder]))
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = np.array([[10, 10, 100, 200], [300, 50, 500, 470]], float)  # 2 crops padded to a batch of 5
    a, b = ts.estimate(image, boxes), onnx.estimate(image, boxes)
    assert np.allclose(a[..., :2], b[..., :2], atol=1e-4)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dw-ll_ucoco_384_bs5.torchscript.pt").write_bytes(b"not a zip")
    with pytest.raises(PoseModelError, match="not a loadable TorchScript"):
        DWPose(type(files)(files.detector, tmp_path / "bad" / "dw-ll_ucoco_384_bs5.torchscript.pt"))


def test_missing_and_wrong_model_files(tmp_path, models):
    folders = comfyui_folders(tmp_path / "ComfyUI")
    with pytest.raises(PoseModelError) as err:
        find_pose_models(folders)
    message = str(err.value)
    assert "yolox_l.onnx" in message and "dw-ll_ucoco_384.onnx" in message
    for sub in ("models/champ/pose", "ckpts/yzd-v/DWPose", "ckpts/hr16/yolox-onnx", "ckpts/hr16/DWPose-TorchScript-BatchSize5"):
        assert sub in message
    # only the detector present: only the pose file is named missing
    folder, _ = models
    with pytest.raises(PoseModelError, match=r"not found: dw-ll_ucoco_384\.onnx or"):
        (tmp_path / "det").mkdir()
        (tmp_path / "det" / "yolox_l.onnx").write_bytes((folder / "yolox_l.onnx").read_bytes())
        find_pose_models([tmp_path / "det"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "yolox_l.onnx").write_bytes(b"\x00garbage")
    (tmp_path / "bad" / "dw-ll_ucoco_384.onnx").write_bytes((folder / "dw-ll_ucoco_384.onnx").read_bytes())
    with pytest.raises(PoseModelError, match=r"yolox_l\.onnx is not a loadable ONNX model"):
        DWPose(find_pose_models([tmp_path / "bad"]))
    # the two files swapped: signatures refused by name
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / "yolox_l.onnx").write_bytes((folder / "dw-ll_ucoco_384.onnx").read_bytes())
    (tmp_path / "swap" / "dw-ll_ucoco_384.onnx").write_bytes((folder / "dw-ll_ucoco_384.onnx").read_bytes())
    with pytest.raises(PoseModelError, match="expected signature"):
        DWPose(find_pose_models([tmp_path / "swap"]))


def test_tracking_by_box_overlap():
    big, small = [300, 100, 500, 500], [50, 200, 150, 400]
    frames = [np.zeros((0, 4)), np.array([small, big], float)]
    for t in range(5):  # both move right; the order of the boxes changes every frame
        b = np.array(big, float) + [12 * (t + 1), 0, 12 * (t + 1), 0]
        s = np.array(small, float) + [8 * (t + 1), 0, 8 * (t + 1), 0]
        frames.append(np.array([b, s] if t % 2 else [s, b]))
    frames.append(np.array([[900, 0, 1000, 100]], float))  # somebody else, far away
    largest = track_person(frames)
    assert largest[0] is None and largest[-1] is None
    assert [frames[t][i][0] for t, i in enumerate(largest) if i is not None] == [300, 312, 324, 336, 348, 360]
    second = track_person(frames, person=1)
    assert [frames[t][i][0] for t, i in enumerate(second) if i is not None] == [50, 58, 66, 74, 82, 90]
    with pytest.raises(PoseDetectionError, match="person 2 asked for.*frame 1.*2 people"):
        track_person(frames, person=2)


def test_pose_keypoint_output_reads_back(models):
    folder, crop = models
    model = DWPose(find_pose_models([folder]))
    frames = [np.zeros((480, 640, 3), np.uint8)] * 3
    seen = []
    seq = model.detect_sequence(frames, total=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    data = seq.to_pose_keypoint()
    assert [len(f["people"]) for f in data] == [1, 1, 1] and len(seq.to_pose_keypoint(everyone=True)[0]["people"]) == 2
    frame = data[0]
    assert frame["canvas_width"] == 640 and frame["canvas_height"] == 480
    person = frame["people"][0]
    assert len(person["pose_keypoints_2d"]) == 54 and len(person["face_keypoints_2d"]) == 68 * 3
    assert len(person["hand_left_keypoints_2d"]) == 63 and len(person["foot_keypoints_2d"]) == 18
    tracked = seq.tracked_keypoints()[0]
    assert np.allclose(tracked[:, :2], seq.people[0][seq.tracked[0]].keypoints[:, :2])
    pose = parse_pose_keypoint(data)
    assert pose.num_frames == 3 and pose.hands is not None and pose.face is not None
    assert np.allclose(pose.body[0, 7, :2], tracked[9, :2])  # OpenPose left wrist = COCO left wrist
    assert np.allclose(pose.hands[0, 0, :, :2], tracked[91:112, :2])
    feet = feet_for_tracked(data, pose.body, 640, 480)
    assert feet is not None and np.allclose(feet[0, 0, :2], tracked[17, :2])


def test_wholebody_layout_and_thresholds():
    pts = np.zeros((133, 3))
    pts[:, 2] = 0.9
    pts[:, 0] = np.arange(133)
    pts[6, 2] = 0.2  # right shoulder below the threshold: it and the neck are missing
    parts = wholebody_to_openpose(pts)
    assert parts["body"][1].tolist() == [0, 0, 0] and parts["body"][2].tolist() == [0, 0, 0]
    assert parts["body"][0, 0] == 0 and parts["body"][14, 0] == 2 and parts["body"][17, 0] == 3
    assert parts["body"][10, 0] == 16 and parts["body"][13, 0] == 15
    assert parts["feet"][0, 0] == 17 and parts["face"][0, 0] == 23 and parts["hands"][1, 0, 0] == 112
    assert set(parts["body"][:, 2]) == {0.0, 1.0}
    frame = frame_dict([pts], 100, 80)
    assert frame["people"][0]["pose_keypoints_2d"][3:6] == [0.0, 0.0, 0.0]
