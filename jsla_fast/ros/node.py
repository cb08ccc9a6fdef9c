"""The ROS 1 relocalization node: ``rosrun jsla_fast localize_node image:=/camera/image_raw _checkpoint:=CK``.

Subscribes to ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage, with
``~compressed``) with ``queue_size=1`` and a 16 MiB buffer (so a large image is not cut into a
backlog); the callback only stores the newest message (:class:`LatestFrame`). A worker thread takes
each frame at most once, drops frames older than ``~max_age`` (counted), decodes
(:mod:`jsla_fast.ros.camera_image`), runs the :class:`~jsla_fast.runtime.Localizer` and publishes
``~pose`` (PoseStamped), ``~pose_with_covariance`` and, while someone subscribes, ``~attention``
(rgb8), all with the image's header stamp in ``~frame_id``. ``/diagnostics`` carries the input and
processed rates, drop counts and percentiles of latency, node overhead and image age. Nothing is
published without a new frame, and no TF is broadcast (the pose is the camera's in the map frame;
a robot's localization stack decides what to do with it).

The covariance is diagonal (position in m², rotation in rad² about x, y, z): for a model with
per-image uncertainty (``uncertainty="aleatoric"``) each frame's own predicted variances (scaled
by the checkpoint's calibration, when it has one); otherwise, per axis, the root-mean-square
validation error of the checkpoint divided by sqrt(3). ``~position_sigma`` / ``~orientation_sigma``
(> 0) override both. ``~mc_samples`` K > 0 adds test-time MC dropout (the head sampled K times per
frame; its spread joins the variances, and for a model without aleatoric uncertainty it is the
covariance), scaled by the checkpoint's MC calibration when it has one. ``/diagnostics``
("covariance") says which, and how it was calibrated.
"""
from __future__ import annotations

import collections
import math
import threading
import time

import numpy as np
import rospy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import Updater
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from sensor_msgs.msg import CompressedImage, Image

from ..checkpoint import read_checkpoint
from ..model.registry import model_from_payload
from ..data import rgb_tensor
from ..plots import attention_picture
from ..executors import NAMES as EXECUTOR_NAMES
from ..runtime import Localizer
from ..uncertainty import calibration_note, mc_spreads
from .camera_image import ImageError, decode_compressed, decode_image, encode_image
from .latest_frame import LatestFrame

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float16", "bfloat16")
#: used when neither the parameters nor the checkpoint (trained without a validation split) give one
FALLBACK_SIGMAS = (1.0, 0.5)


def read_params() -> dict:
    """The private parameters, validated; raises ValueError naming every bad one."""
    p = {
        "checkpoint": rospy.get_param("~checkpoint", ""),
        "device": rospy.get_param("~device", "auto"),
        "backend": rospy.get_param("~backend", "auto"),
        "dtype": rospy.get_param("~dtype", "float32"),
        "backbone": rospy.get_param("~backbone", "auto"),
        "frame_id": rospy.get_param("~frame_id", "map"),
        "max_age": rospy.get_param("~max_age", 0.5),
        "compressed": rospy.get_param("~compressed", False),
        "publish_attention": rospy.get_param("~publish_attention", True),
        "threads": rospy.get_param("~threads", 0),
        "mc_samples": rospy.get_param("~mc_samples", 0),
        "position_sigma": rospy.get_param("~position_sigma", 0.0),
        "orientation_sigma": rospy.get_param("~orientation_sigma", 0.0),
        "test_delay": rospy.get_param("~test_delay", 0.0),  # tests only: makes inference this much slower
    }
    problems = []

    def number(key, kind, minimum, strict):
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            problems.append(f"~{key} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
        elif value < minimum or (strict and value == minimum) or not math.isfinite(value):
            problems.append(f"~{key} must be {'>' if strict else '>='} {minimum}, got {value!r}")

    if not p["checkpoint"]:
        problems.append("~checkpoint is required (a .pt written by python -m jsla_fast.train)")
    if p["device"] not in DEVICES:
        problems.append(f"~device {p['device']!r} must be one of {', '.join(DEVICES)}")
    if p["dtype"] not in DTYPES:
        problems.append(f"~dtype {p['dtype']!r} must be one of {', '.join(DTYPES)}")
    if p["backbone"] not in EXECUTOR_NAMES:
        problems.append(f"~backbone {p['backbone']!r} must be one of {', '.join(EXECUTOR_NAMES)}")
    if not isinstance(p["frame_id"], str) or not p["frame_id"]:
        problems.append(f"~frame_id must be a non-empty string, got {p['frame_id']!r}")
    for key in ("compressed", "publish_attention"):
        if not isinstance(p[key], bool):
            problems.append(f"~{key} must be true or false, got {p[key]!r}")
    number("max_age", float, 0, strict=True)
    number("threads", int, 0, strict=False)
    number("mc_samples", int, 0, strict=False)
    for key in ("position_sigma", "orientation_sigma", "test_delay"):
        number(key, float, 0, strict=False)
    if problems:
        raise ValueError("; ".join(problems))
    if p["device"] == "auto":
        p["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return p


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def covariance_sigmas(extra: dict, position_sigma: float, orientation_sigma: float) -> tuple[float, float, str]:
    """Per-axis standard deviations (m, rad) and where they come from."""
    if position_sigma > 0 and orientation_sigma > 0:
        return position_sigma, orientation_sigma, "parameters"
    val = extra.get("val") or {}
    if "val_rms_t_m" in val and "val_rms_r_deg" in val:
        sp, so = val["val_rms_t_m"] / math.sqrt(3), math.radians(val["val_rms_r_deg"]) / math.sqrt(3)
        source = f"validation errors at epoch {extra.get('epoch', '?')}"
    else:
        sp, so = FALLBACK_SIGMAS
        source = "fallback (the checkpoint has no validation errors; set ~position_sigma, ~orientation_sigma)"
    return position_sigma or sp, orientation_sigma or so, source


def diagonal_covariance(position_sigma: list[float], orientation_sigma: list[float]) -> list[float]:
    """The 6x6 row-major covariance of PoseWithCovariance from per-axis standard deviations."""
    var = [s * s for s in (*position_sigma, *orientation_sigma)]
    return [var[i] if i == j else 0.0 for i in range(6) for j in range(6)]


class LocalizeNode:
    def __init__(self, params: dict) -> None:
        self.p = params
        payload = read_checkpoint(params["checkpoint"])  # read once: the model and its validation errors
        model = model_from_payload(payload, params["checkpoint"])
        if model.config.task != "pose":
            raise ValueError(f"{params['checkpoint']} holds a {model.config.task} model (task "
                             f"{model.config.task!r}, {model.config.num_classes} classes); localize_node "
                             "publishes camera poses: give it a checkpoint trained with task 'pose'")
        if params["mc_samples"] and not mc_spreads(model):
            raise ValueError(f"~mc_samples {params['mc_samples']}: {params['checkpoint']} has no dropout and no "
                             "predicted sigmas, so MC dropout would publish a zero covariance; set ~mc_samples 0, "
                             "or train with model.dropout > 0 or model.uncertainty: aleatoric")
        self.localizer = Localizer(model, params["device"],
                                   backend=params["backend"], threads=params["threads"] or None,
                                   dtype=params["dtype"], backbone=params["backbone"],
                                   mc_samples=params["mc_samples"] or None)
        extra = payload.get("extra", {})
        sp, so, self.sigma_source = covariance_sigmas(extra, params["position_sigma"], params["orientation_sigma"])
        self.covariance = diagonal_covariance([sp] * 3, [so] * 3)
        self.per_frame = ((model.config.uncertainty == "aleatoric" or params["mc_samples"] > 0)
                          and self.sigma_source != "parameters")
        if self.per_frame:
            self.sigma_source = "per-frame " + calibration_note(model, params["mc_samples"] or None)
        self.frames = LatestFrame(max_age=params["max_age"])
        self.failed = 0
        window = 1000  # frames kept for the percentiles
        self.latency_ms = collections.deque(maxlen=window)  # receipt -> published
        self.overhead_ms = collections.deque(maxlen=window)  # latency minus the model's time
        self.age_ms = collections.deque(maxlen=window)  # image stamp -> inference start
        self.pose_pub = rospy.Publisher("~pose", PoseStamped, queue_size=1)
        self.cov_pub = rospy.Publisher("~pose_with_covariance", PoseWithCovarianceStamped, queue_size=1)
        self.att_pub = rospy.Publisher("~attention", Image, queue_size=1) if params["publish_attention"] else None
        # image_transport's convention: `image:=/cam/image_raw` -> /cam/image_raw/compressed
        topic, kind = (rospy.resolve_name("image") + "/compressed", CompressedImage) if params["compressed"] \
            else ("image", Image)
        self.diagnostics = Updater()
        self.diagnostics.setHardwareID("jsla_fast")
        self.diagnostics.add("relocalization", self.diagnose)
        self._last = (time.monotonic(), 0, 0)  # for the rates between two diagnostics
        self.worker = threading.Thread(target=self.run, name="jsla_fast-worker", daemon=True)
        self.worker.start()
        rospy.on_shutdown(self.frames.close)
        # subscribe last: the model is loaded, so a test (or a user) that waits for the subscription
        # can start publishing at once
        self.sub = rospy.Subscriber(topic, kind, self.on_image, queue_size=1, buff_size=2 ** 24)

    def on_image(self, msg) -> None:  # the callback only stores the newest frame
        self.frames.put(msg, msg.header.stamp.to_sec())

    def decode(self, msg) -> np.ndarray:
        if self.p["compressed"]:
            return decode_compressed(msg.format, msg.data)
        return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))

    def run(self) -> None:
        while not rospy.is_shutdown():
            frame = self.frames.take(timeout=0.5)
            if frame is None:
                continue
            if frame.stamp > 0:
                self.age_ms.append((rospy.get_time() - frame.stamp) * 1e3)
            try:
                self.process(frame)
            except ImageError as e:
                self.frames.count_bad()
                rospy.logwarn_throttle_identical(5.0, f"dropped an image: {e}")
            except Exception as e:  # never let one frame kill the worker: say what failed and go on
                self.failed += 1
                rospy.logerr_throttle(5.0, f"inference failed on an image ({type(e).__name__}: {e})")

    def process(self, frame) -> None:
        msg = frame.payload
        rgb = self.decode(msg)
        image = rgb_tensor(rgb)
        start = time.monotonic()
        result = self.localizer.localize(image)
        if self.p["test_delay"]:
            time.sleep(self.p["test_delay"])
        model_ms = (time.monotonic() - start) * 1e3
        self.publish(msg.header, result, image)
        latency = (time.monotonic() - frame.received) * 1e3
        self.latency_ms.append(latency)
        self.overhead_ms.append(latency - model_ms)

    def publish(self, header, result, image: torch.Tensor) -> None:
        """``image``: the RGB [3,H,W] float tensor the model saw (before its preprocessing)."""
        x, y, z, qw, qx, qy, qz = result.pose
        pose = PoseStamped()
        pose.header.stamp = header.stamp
        pose.header.frame_id = self.p["frame_id"]
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = x, y, z
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = qx, qy, qz, qw  # ROS order
        self.pose_pub.publish(pose)
        cov = PoseWithCovarianceStamped()
        cov.header = pose.header
        cov.pose.pose = pose.pose
        cov.pose.covariance = (diagonal_covariance(result.position_sigma_m, result.orientation_sigma_rad)
                               if self.per_frame else self.covariance)
        self.cov_pub.publish(cov)
        if self.att_pub is not None and self.att_pub.get_num_connections() > 0:
            picture = attention_picture(self.localizer.model, image, result)
            out = Image()
            out.header = pose.header
            out.height, out.width, out.step, out.data = encode_image(picture)
            out.encoding = "rgb8"
            self.att_pub.publish(out)

    def diagnose(self, stat):
        c = self.frames.counts
        now = time.monotonic()
        then, received, processed = self._last
        self._last = (now, c.received, c.processed)
        elapsed = max(now - then, 1e-9)
        level = DiagnosticStatus.OK if c.processed else DiagnosticStatus.WARN
        stat.summary(level, "localizing" if c.processed else "no image processed yet")
        stat.add("input rate (Hz)", f"{(c.received - received) / elapsed:.2f}")
        stat.add("processed rate (Hz)", f"{(c.processed - processed) / elapsed:.2f}")
        stat.add("received", str(c.received))
        stat.add("processed", str(c.processed))
        for name in ("replaced", "stale", "bad"):
            stat.add(f"dropped {name}", str(getattr(c, name)))
        stat.add("failed", str(self.failed))
        for label, values in (("latency", self.latency_ms), ("overhead", self.overhead_ms), ("image age", self.age_ms)):
            for q in (50, 90, 99):
                stat.add(f"{label} p{q} (ms)", f"{percentile(values, q):.3f}")
        stat.add("backend", self.localizer.backend)
        stat.add("covariance", self.sigma_source)
        return stat


def main() -> None:
    rospy.init_node("localize_node")
    try:
        params = read_params()
    except ValueError as e:
        rospy.logfatal(f"jsla_fast localize_node: {e}")
        raise SystemExit(2) from None
    try:
        node = LocalizeNode(params)
    except Exception as e:  # a missing checkpoint, an unavailable backend...: say it once, plainly
        rospy.logfatal(f"jsla_fast localize_node: could not start with {params['checkpoint']}: {e}")
        raise SystemExit(2) from None
    rospy.loginfo(f"jsla_fast localize_node: {params['checkpoint']} on {params['device']} "
                  f"(backend {node.localizer.backend}, covariance from {node.sigma_source}), "
                  f"listening on {node.sub.name}")
    while not rospy.is_shutdown():
        node.diagnostics.update()
        rospy.sleep(0.2)
