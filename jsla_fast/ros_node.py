"""The ROS 1 relocalization node (issue 5; run as ``rosrun jsla_fast localize_node``).

Subscribes to ``image`` (sensor_msgs/Image) or ``image/compressed`` (CompressedImage, with
``~compressed``); the callback only stores the newest message (:class:`LatestFrame`), a worker
thread decodes it (:mod:`jsla_fast.camera_image`), runs the :class:`~jsla_fast.runtime.Localizer`
and publishes ``~pose`` (PoseStamped), ``~pose_with_covariance`` and, while someone listens,
``~attention`` (rgb8), all stamped with the image's stamp in ``~frame_id``. ``/diagnostics``
reports input and processed rates, drops and latency percentiles. No TF is broadcast.

Status: written, not yet covered by the ROS integration tests (next step of issue 5).
"""
from __future__ import annotations

import collections
import threading
import time

import numpy as np
import rospy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import Updater
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from sensor_msgs.msg import CompressedImage, Image

from .camera_image import ImageError, decode_compressed, decode_image, encode_rgb8
from .inference import attention_picture
from .latest_frame import LatestFrame
from .runtime import Localizer

DEVICES = ("auto", "cpu", "cuda")


def read_params() -> dict:
    p = {
        "checkpoint": rospy.get_param("~checkpoint", ""),
        "device": rospy.get_param("~device", "auto"),
        "backend": rospy.get_param("~backend", "auto"),
        "frame_id": rospy.get_param("~frame_id", "map"),
        "max_age": float(rospy.get_param("~max_age", 0.5)),
        "compressed": bool(rospy.get_param("~compressed", False)),
        "publish_attention": bool(rospy.get_param("~publish_attention", True)),
        "threads": int(rospy.get_param("~threads", 0)),
        "position_sigma": float(rospy.get_param("~position_sigma", 1.0)),
        "orientation_sigma": float(rospy.get_param("~orientation_sigma", 0.5)),
        "test_delay": float(rospy.get_param("~test_delay", 0.0)),  # tests only: slows inference
    }
    problems = []
    if not p["checkpoint"]:
        problems.append("~checkpoint is required (a .pt written by python -m jsla_fast.train)")
    if p["device"] not in DEVICES:
        problems.append(f"~device {p['device']!r} must be one of {', '.join(DEVICES)}")
    if p["max_age"] <= 0:
        problems.append(f"~max_age must be > 0 seconds, got {p['max_age']}")
    if p["threads"] < 0:
        problems.append(f"~threads must be >= 0 (0 = torch's default), got {p['threads']}")
    if not p["frame_id"]:
        problems.append("~frame_id must not be empty")
    if problems:
        raise ValueError("; ".join(problems))
    if p["device"] == "auto":
        p["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    return p


class LocalizeNode:
    def __init__(self, params: dict) -> None:
        self.p = params
        self.localizer = Localizer(params["checkpoint"], params["device"], backend=params["backend"],
                                   threads=params["threads"] or None)
        self.frames = LatestFrame(max_age=params["max_age"])
        self.latency_ms: collections.deque[float] = collections.deque(maxlen=300)
        self.overhead_ms: collections.deque[float] = collections.deque(maxlen=300)
        self.pose_pub = rospy.Publisher("~pose", PoseStamped, queue_size=1)
        self.cov_pub = rospy.Publisher("~pose_with_covariance", PoseWithCovarianceStamped, queue_size=1)
        self.att_pub = rospy.Publisher("~attention", Image, queue_size=1) if params["publish_attention"] else None
        topic, kind = ("image/compressed", CompressedImage) if params["compressed"] else ("image", Image)
        self.sub = rospy.Subscriber(topic, kind, self.on_image, queue_size=1, buff_size=2 ** 24)
        self.diagnostics = Updater()
        self.diagnostics.setHardwareID("jsla_fast")
        self.diagnostics.add("relocalization", self.diagnose)
        self.started = time.monotonic()
        self.worker = threading.Thread(target=self.run, name="jsla_fast-worker", daemon=True)
        self.worker.start()
        rospy.on_shutdown(self.frames.close)

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
            msg = frame.payload
            try:
                rgb = self.decode(msg)
            except ImageError as e:
                self.frames.count_bad()
                rospy.logwarn_throttle(5.0, f"dropped an image: {e}")
                continue
            image = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255)
            result = self.localizer.localize(image)
            if self.p["test_delay"]:
                time.sleep(self.p["test_delay"])
            self.publish(msg.header, result, image)
            done = time.monotonic()
            self.latency_ms.append((done - frame.received) * 1e3)
            self.overhead_ms.append((done - frame.received) * 1e3 - result.ms)

    def publish(self, header, result, image: torch.Tensor) -> None:
        """``image``: the RGB [3,H,W] float tensor the model saw (before its preprocessing)."""
        if result.pose is None:
            rospy.logwarn_throttle(30.0, "this checkpoint is a scene classifier: no pose to publish")
            return
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
        sp, so = self.p["position_sigma"] ** 2, self.p["orientation_sigma"] ** 2
        cov.pose.covariance = [sp if i == j and i < 3 else so if i == j else 0.0 for i in range(6) for j in range(6)]
        self.cov_pub.publish(cov)
        if self.att_pub is not None and self.att_pub.get_num_connections() > 0:
            picture = attention_picture(self.localizer.model, image, result)
            out = Image()
            out.header = pose.header
            out.height, out.width, out.step, out.data = encode_rgb8(picture)
            out.encoding = "rgb8"
            self.att_pub.publish(out)

    def diagnose(self, stat):
        c = self.frames.counts
        elapsed = max(time.monotonic() - self.started, 1e-9)
        lat = sorted(self.latency_ms)
        level = DiagnosticStatus.OK if c.processed else DiagnosticStatus.WARN
        stat.summary(level, "localizing" if c.processed else "no image processed yet")
        stat.add("input rate (Hz)", f"{c.received / elapsed:.2f}")
        stat.add("processed rate (Hz)", f"{c.processed / elapsed:.2f}")
        for name in ("replaced", "stale", "bad"):
            stat.add(f"dropped {name}", str(getattr(c, name)))
        for q in (50, 90, 99):
            stat.add(f"latency p{q} (ms)", f"{lat[min(len(lat) - 1, len(lat) * q // 100)]:.2f}" if lat else "-")
        return stat


def main() -> None:
    rospy.init_node("localize_node")
    try:
        params = read_params()
    except ValueError as e:
        rospy.logfatal(f"jsla_fast localize_node: {e}")
        raise SystemExit(2) from None
    node = LocalizeNode(params)
    rospy.loginfo(f"jsla_fast localize_node: {params['checkpoint']} on {params['device']} "
                  f"(backend {node.localizer.backend}), listening on {node.sub.name}")
    while not rospy.is_shutdown():
        node.diagnostics.update()
        rospy.sleep(1.0)
