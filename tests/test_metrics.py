from __future__ import annotations

import pytest
import torch

from jsla_fast.metrics import layer_usage, pose_metrics, scene_metrics


def test_pose_medians_follow_the_usual_convention():
    truth = torch.tensor([[0.0, 0, 0, 1, 0, 0, 0]]).repeat(4, 1)
    pred = truth.clone()
    pred[:, 0] = torch.tensor([1.0, 2.0, 4.0, 10.0])
    m = pose_metrics(pred, truth)
    assert m["median_t_m"] == pytest.approx(3.0)  # mean of the middle two, as numpy.median
    assert m["mean_t_m"] == pytest.approx(4.25) and m["median_r_deg"] == pytest.approx(0.0, abs=1e-6)
    assert m["rms_t_m"] == pytest.approx(((1 + 4 + 16 + 100) / 4) ** 0.5) and m["rms_r_deg"] == pytest.approx(0.0, abs=1e-6)


def test_scene_accuracy_per_class_and_layer_usage():
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 0, 2.0]])
    labels = torch.tensor([0, 1, 1, 2])
    m = scene_metrics(logits, labels, ["a", "b", "c"])
    assert m["accuracy"] == 0.75 and m["per_class_accuracy"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    assert m["mean_class_accuracy"] == pytest.approx(2.5 / 3)
    usage = layer_usage(torch.tensor([[0, 2], [0, 2], [1, 2], [0, 0]]), ["3b", "4e", "5b"])
    assert usage == [{"3b": 0.75, "4e": 0.25, "5b": 0.0}, {"3b": 0.25, "4e": 0.0, "5b": 0.75}]
