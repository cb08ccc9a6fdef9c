"""Dataset readers on small datasets written here in the real layouts, the validation split,
the cached mean image, preprocessing, and bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from jsla_fast.config import DataConfig
from jsla_fast.data import DataError, open_dataset, read_records
from jsla_fast.data import mean_image as mean_image_module
from jsla_fast.pose import quaternion_to_matrix

from helpers.data import S, cambridge, mit67, seven_scenes, write_image

CFG = DataConfig(resize=32, scene_size=32, crop=24, val_fraction=0.25, workers=0)


def test_cambridge_reads_poses_w_first(tmp_path, seed):
    root = cambridge(tmp_path, np.random.default_rng(seed))
    test = read_records(root, "cambridge", "test", CFG)
    assert test.paths == [root / "seq2" / "frame00000.png"]
    expect = torch.tensor([[1.0, 2.0, 3.0, S, 0, 0, S]], dtype=torch.float64)
    torch.testing.assert_close(test.targets, expect)
    # w-first (w, p, q, r): a 90 degree turn about z, as a matrix computed by hand
    rz90 = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(quaternion_to_matrix(test.targets[0, 3:]), rz90, atol=1e-12, rtol=0)


def test_non_unit_and_negative_quaternions_are_normalised_with_one_warning(tmp_path, seed, caplog):
    lines = [f"seq1/frame0000{i}.png 0 0 0 -2 0 0 0" for i in range(3)] + ["seq2/frame00000.png 0 0 0 0 0 0 3"]
    root = cambridge(tmp_path, np.random.default_rng(seed), lines)
    with caplog.at_level(logging.WARNING, logger="jsla_fast.data"):
        records = read_records(root, "cambridge", "train", DataConfig(val_fraction=0.0))
    torch.testing.assert_close(records.targets[:, 3:], torch.tensor([[1.0, 0, 0, 0]] * 3 + [[0, 0, 0, 1.0]],
                                                                   dtype=torch.float64))
    warnings = [r.getMessage() for r in caplog.records if "not 1; normalised" in r.getMessage()]
    assert len(warnings) == 1 and "dataset_train.txt:4: quaternion norm 2.0000" in warnings[0]
    assert "(4 such entries" in warnings[0]


def test_malformed_line_names_file_and_line_and_skip_bad_counts(tmp_path, seed, caplog):
    lines = ["seq1/frame00000.png 0 0 0 1 0 0 0", "seq1/frame00001.png 0 0 zero 1 0 0 0",
             "seq1/frame00002.png 0 0 1 0 0", "seq1/missing.png 0 0 0 1 0 0 0", "seq1/frame00003.png 1 1 1 1 0 0 0"]
    root = cambridge(tmp_path, np.random.default_rng(seed), lines)
    with pytest.raises(DataError, match=r"dataset_train.txt:5: pose values are not numbers.*--skip-bad"):
        read_records(root, "cambridge", "train", CFG)
    with caplog.at_level(logging.WARNING, logger="jsla_fast.data"):
        records = read_records(root, "cambridge", "train", DataConfig(val_fraction=0.0), skip_bad=True)
    assert [p.name for p in records.paths] == ["frame00000.png", "frame00003.png"]
    assert any("skipped 3 bad entries" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_7scenes_reads_matrices(tmp_path, ext, seed):
    root = seven_scenes(tmp_path, np.random.default_rng(seed), ext)
    train = read_records(root, "7scenes", "train", DataConfig(val_fraction=0.0))
    assert [p.parent.name for p in train.paths] == ["seq-01"] * 4 + ["seq-03"] * 4
    assert all(p.name.endswith(f".color.{ext}") for p in train.paths)
    expect_q = torch.tensor([S, 0, 0, S], dtype=torch.float64)  # 90 degrees about z, by hand
    torch.testing.assert_close(train.targets[:, 3:], expect_q.expand(8, 4), atol=1e-7, rtol=0)
    torch.testing.assert_close(train.targets[:, 0], torch.tensor([10.0, 11, 12, 13, 30, 31, 32, 33],
                                                                dtype=torch.float64))
    torch.testing.assert_close(train.targets[:, 1:3], torch.tensor([[2.0, 3.0]] * 8, dtype=torch.float64))
    test = read_records(root, "7scenes", "test", CFG)
    assert {p.parent.name for p in test.paths} == {"seq-02"}


def test_7scenes_bad_pose_file(tmp_path, seed):
    root = seven_scenes(tmp_path, np.random.default_rng(seed))
    (root / "seq-01" / "frame-000002.pose.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DataError, match=r"frame-000002.pose.txt: expected 4 rows of 4 numbers"):
        read_records(root, "7scenes", "train", CFG)
    (root / "seq-01" / "frame-000002.pose.txt").write_text("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    with pytest.raises(DataError, match="not a rotation"):
        read_records(root, "7scenes", "train", CFG)
    (root / "TrainSplit.txt").write_text("sequence9\n")
    with pytest.raises(DataError, match=r"TrainSplit.txt:1: sequence folder .*seq-09 does not exist"):
        read_records(root, "7scenes", "train", CFG)


def test_mit67_labels_follow_sorted_classes(tmp_path, seed):
    root = mit67(tmp_path, np.random.default_rng(seed))
    test = read_records(root, "mit67", "test", CFG)
    assert test.classes == ["airport_inside", "bookstore", "closet"]
    assert test.targets.tolist() == [1, 0, 2]
    (root / "TestImages.txt").write_text("kitchen/img0.jpg\n")
    with pytest.raises(DataError, match="TestImages.txt:1: 'kitchen/img0.jpg' is not"):
        read_records(root, "mit67", "test", CFG)


def test_pose_csv_with_and_without_header(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for i in range(3):
        write_image(tmp_path / "imgs" / f"{i}.png", rng)
    (tmp_path / "train.csv").write_text("path,x,y,z,qw,qx,qy,qz\n" + "".join(
        f"imgs/{i}.png,{i},0,0,1,0,0,0\n" for i in range(3)))
    (tmp_path / "test.csv").write_text(f"imgs/0.png,5,6,7,0,{S},{S},0\n")
    assert len(read_records(tmp_path, "csv", "train", DataConfig(val_fraction=0.0))) == 3
    test = read_records(tmp_path, "csv", "test", CFG)
    torch.testing.assert_close(test.targets, torch.tensor([[5.0, 6, 7, 0, S, S, 0]], dtype=torch.float64))


def test_validation_is_held_out_of_train_only(tmp_path, seed):
    root = seven_scenes(tmp_path, np.random.default_rng(seed))
    cfg = DataConfig(val_fraction=0.25)
    train, val = read_records(root, "7scenes", "train", cfg), read_records(root, "7scenes", "val", cfg)
    names = lambda r: [f"{p.parent.name}/{p.name}" for p in r.paths]  # noqa: E731
    assert names(val) == ["seq-01/frame-000003.color.png", "seq-03/frame-000003.color.png"]  # sequence tails
    assert not set(names(train)) & set(names(val)) and len(train) + len(val) == 8
    scene_root = mit67(tmp_path / "mit", np.random.default_rng(seed))
    sval = read_records(scene_root, "mit67", "val", cfg)
    assert sorted(sval.groups) == ["airport_inside", "bookstore", "closet"]  # one per class


def test_mean_image_is_the_train_mean_and_cached(tmp_path, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    root = seven_scenes(tmp_path, rng)
    cfg = DataConfig(resize=30, crop=24, val_fraction=0.25)
    ds = open_dataset(root, "7scenes", "test", cfg)  # the mean comes from train only
    norm = ds.normalization
    assert norm.size == (30, 40) and norm.crop == 24
    train = read_records(root, "7scenes", "train", cfg)
    manual = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float() / 255
                          for p in train.paths]).mean(0)  # 30x40 is already the resized size
    torch.testing.assert_close(norm.mean, manual, atol=1e-6, rtol=0)
    assert len(list((root / ".jsla_fast_cache").glob("mean-30x40-*.pt"))) == 1
    monkeypatch.setattr(mean_image_module, "load_image", lambda p: (_ for _ in ()).throw(AssertionError("recomputed")))
    torch.testing.assert_close(open_dataset(root, "7scenes", "test", cfg).normalization.mean, norm.mean)


def test_items_are_cropped_normalised_and_augmented(tmp_path, seed):
    root = mit67(tmp_path, np.random.default_rng(seed))
    test = open_dataset(root, "mit67", "test", CFG)
    image, label = test[0]
    assert image.shape == (3, 24, 24) and image.dtype == torch.float32 and label.dtype == torch.int64
    from jsla_fast.data import load_image
    torch.testing.assert_close(image, test.normalization.prepare(load_image(test.records.paths[0])))
    train = open_dataset(root, "mit67", "train", CFG, normalization=test.normalization)
    assert train.augment and train.flip  # scenes flip, poses do not
    crops = {tuple(train[0][0].flatten()[:8].tolist()) for _ in range(20)}
    assert len(crops) > 1  # random crops differ
    poses = open_dataset(seven_scenes(tmp_path / "7s", np.random.default_rng(seed)), "7scenes", "train", CFG)
    assert not poses.flip and poses[0][1].shape == (7,) and poses[0][1].dtype == torch.float32
    # random_crop off: training items are the test-time centre crop (flips, when on, still apply)
    centre = DataConfig(**{**CFG.to_dict(), "random_crop": False})
    fixed = open_dataset(root, "mit67", "train", centre, normalization=test.normalization)
    expect = test.normalization.prepare(load_image(fixed.records.paths[0]))
    for _ in range(10):
        got = fixed[0][0]
        assert torch.equal(got, expect) or torch.equal(got, expect.flip(-1))


def test_unreadable_image_and_empty_split(tmp_path, seed, caplog):
    root = seven_scenes(tmp_path, np.random.default_rng(seed))
    (root / "seq-01" / "frame-000001.color.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"frame-000001.color.png is unreadable.*--skip-bad"):
        open_dataset(root, "7scenes", "train", CFG)
    with caplog.at_level(logging.WARNING, logger="jsla_fast.data"):
        ds = open_dataset(root, "7scenes", "train", DataConfig(resize=32, crop=24, val_fraction=0.0), skip_bad=True)
    assert len(ds) == 7 and any("skipped 1 bad entries" in r.getMessage() for r in caplog.records)
    (root / "TestSplit.txt").write_text("\n")
    with pytest.raises(DataError, match="test split .* has no images"):
        read_records(root, "7scenes", "test", CFG)
    with pytest.raises(DataError, match="TrainSplit.txt not found: --data must be a 7-Scenes scene folder"):
        read_records(tmp_path / "seq-01", "7scenes", "train", CFG)
