"""The references every pose result is read against: mean pose, nearest training pose, retrieval."""
from __future__ import annotations

import json
import math

import pytest
import torch

from jsla_fast.pose import canonical_quaternion
from jsla_fast.references import (coverage, descriptors, image_descriptor, main, mean_pose, nearest_pose, pose_spreads,
                                  reference_results, retrieve)
from jsla_fast.synth import generate_pose_scene


def yaw_pose(x: float, y: float, yaw_deg: float) -> torch.Tensor:
    half = math.radians(yaw_deg) / 2
    return torch.tensor([x, y, 0.0, math.cos(half), 0.0, 0.0, math.sin(half)], dtype=torch.float64)


def test_mean_pose_and_spreads():
    poses = torch.stack([yaw_pose(0, 0, -30), yaw_pose(2, 0, 30)])
    poses[1, 3:] *= -1  # the same rotation in the other hemisphere: the mean must not cancel it
    mean = mean_pose(poses)
    assert torch.allclose(mean[:3], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    assert torch.allclose(mean[3:], canonical_quaternion(yaw_pose(0, 0, 0)[3:]), atol=1e-12)
    sigma_t, sigma_r = pose_spreads(poses)
    assert sigma_t == pytest.approx(1.0) and sigma_r == pytest.approx(30.0)


def test_nearest_pose_weighs_position_and_angle_by_the_spreads():
    train = torch.stack([yaw_pose(0, 0, 0), yaw_pose(1, 0, 0), yaw_pose(0, 0, 90), yaw_pose(1, 0, 90)])
    # spreads: 0.5 m and 45 deg; 0.4 m + 40 deg from pose 0 beats 0.6 m + 50 deg from pose 3
    test = torch.stack([yaw_pose(0.4, 0, 40), yaw_pose(1, 0, 90)])
    assert nearest_pose(train, test).tolist() == [0, 3]
    cov = coverage(train, test)
    # test 0: nearest position 0.4 m (poses 0/2), nearest orientation 40 deg (0/1); test 1: exact
    assert cov["nearest_position_median_m"] == pytest.approx(0.2)
    assert cov["nearest_orientation_median_deg"] == pytest.approx(20.0)


def test_descriptor_ignores_exposure_and_retrieves_the_same_view():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 48, 64, generator=g)
    d = torch.stack([image_descriptor(im) for im in images])
    assert d.shape == (4, 16 * 9) and torch.allclose(d.norm(dim=1), torch.ones(4))
    darker = torch.stack([image_descriptor(0.6 * im) for im in images])
    assert torch.allclose(darker, d, atol=1e-5)  # a gain on the image leaves the descriptor unchanged
    assert retrieve(d, darker.flip(0)).tolist() == [3, 2, 1, 0]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("refs") / "scene"
    return generate_pose_scene(out, seed=2, train=40, test=10, size=(64, 48), layout="area", sequences=(2, 1),
                               workers=1, progress=False)


def test_reference_results_on_a_rendered_scene(scene, tmp_path):
    path = tmp_path / "refs.json"
    assert main(["--data", str(scene), "--format", "7scenes", "--json", str(path)]) == 0
    refs = json.loads(path.read_text())
    assert refs == reference_results(scene, "7scenes")  # JSON keeps floats exact
    assert refs["train_images"] == 40 and refs["test_images"] == 10
    for key in ("mean_pose", "nearest_pose", "retrieval"):
        assert refs[key]["count"] == 10 and refs[key]["median_t_m"] >= 0
    # the oracle knows the true pose: it beats the mean pose, and its coverage figures bound its errors
    oracle = refs["nearest_pose"]
    assert oracle["median_t_m"] < refs["mean_pose"]["median_t_m"]
    assert oracle["nearest_position_median_m"] <= oracle["median_t_m"]
    assert oracle["nearest_orientation_median_deg"] <= oracle["median_r_deg"]
    assert "HOG" in refs["retrieval"]["descriptor"]


def test_retrieval_of_the_training_images_is_exact(scene):
    from jsla_fast.config import DataConfig
    from jsla_fast.data import read_records

    train = read_records(scene, "7scenes", "train", DataConfig(val_fraction=0.0))
    d = descriptors(train.paths)
    assert retrieve(d, d).tolist() == list(range(len(train)))


def test_cli_rejects_a_scene_dataset(tmp_path, caplog):
    from jsla_fast.synth import generate_scene_classes

    data = generate_scene_classes(tmp_path / "mit", seed=0, classes=2, train=2, test=1, size=(32, 32), workers=1,
                                  progress=False)
    assert main(["--data", str(data), "--format", "mit67"]) == 2
    assert "references are for pose datasets" in caplog.text
