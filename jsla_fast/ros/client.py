"""A rospy client in this process that talks to ``localize_node``: publishes camera images and
collects what the node publishes. Used by the ROS tests, the demo's replay
(:mod:`jsla_fast.ros.replay`) and ``bench --ros``.

rospy allows one node per process and reads ``ROS_MASTER_URI`` when it starts, so
:func:`connect` is called once per process with the master's environment.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import rospy
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from sensor_msgs.msg import CompressedImage, Image

from .camera_image import encode_image

_connected: str | None = None


def connect(env: dict[str, str], name: str = "jsla_fast_client") -> None:
    """Start this process's rospy node against the master in ``env`` (once per process)."""
    global _connected
    uri = env["ROS_MASTER_URI"]
    if _connected is not None:
        if _connected != uri:
            raise RuntimeError(f"this process's rospy node already talks to {_connected}; rospy can't switch to {uri}")
        return
    for key in ("ROS_MASTER_URI", "ROS_HOSTNAME", "ROS_HOME", "ROS_LOG_DIR", "ROS_PACKAGE_PATH"):
        os.environ[key] = env[key]
    rospy.init_node(name, anonymous=True, disable_signals=True, log_level=rospy.WARN)
    logging.getLogger("rospy").setLevel(logging.WARNING)  # its INFO chatter would mix into our reports
    _connected = uri


def image_message(rgb: np.ndarray, encoding: str = "rgb8", stamp: float | rospy.Time = 0.0,
                  frame_id: str = "camera", padding: int = 0) -> Image:
    """RGB ``uint8 [H,W,3]`` as a ``sensor_msgs/Image`` in ``encoding`` (rows padded by ``padding`` bytes)."""
    msg = Image()
    msg.header.stamp = stamp if isinstance(stamp, rospy.Time) else rospy.Time.from_sec(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step, data = encode_image(rgb, encoding, padding)
    msg.encoding, msg.is_bigendian, msg.data = encoding, 0, data
    return msg


def compressed_message(rgb: np.ndarray, stamp: float = 0.0, fmt: str = "png", frame_id: str = "camera") -> CompressedImage:
    import cv2

    ok, buf = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ValueError(f"OpenCV could not encode {fmt}")
    msg = CompressedImage()
    msg.header.stamp = rospy.Time.from_sec(stamp)
    msg.header.frame_id = frame_id
    msg.format, msg.data = fmt, buf.tobytes()
    return msg


class Collector:
    """Subscribes to ``topic`` and keeps every message with its arrival time (``time.monotonic``)."""

    def __init__(self, topic: str, kind) -> None:
        self.items: list[tuple[object, float]] = []
        self._cond = threading.Condition()
        self.sub = rospy.Subscriber(topic, kind, self._on, queue_size=100)

    def _on(self, msg) -> None:
        with self._cond:
            self.items.append((msg, time.monotonic()))
            self._cond.notify_all()

    @property
    def messages(self) -> list:
        with self._cond:
            return [m for m, _ in self.items]

    def wait_for(self, count: int, timeout: float) -> list:
        """The first ``count`` messages (fewer after ``timeout`` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.items) >= count, timeout)
            return [m for m, _ in self.items[:count]]

    def wait_stamp(self, stamp: rospy.Time, timeout: float) -> tuple[object, float] | None:
        """The first message whose header stamp is ``stamp``, with its arrival time."""
        def find():
            return next(((m, t) for m, t in self.items if m.header.stamp == stamp), None)
        with self._cond:
            self._cond.wait_for(lambda: find() is not None, timeout)
            return find()

    def clear(self) -> None:
        with self._cond:
            self.items.clear()

    def close(self) -> None:
        self.sub.unregister()


def wait_connected(pub: rospy.Publisher, timeout: float = 10.0) -> None:
    """Block until ``pub`` has a subscriber connection (messages sent before are lost)."""
    deadline = time.monotonic() + timeout
    while pub.get_num_connections() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody subscribed to {pub.resolved_name} within {timeout} s")
        time.sleep(0.02)


def pose_vector(msg: PoseStamped | PoseWithCovarianceStamped) -> list[float]:
    """The message's pose as this project's ``[x, y, z, qw, qx, qy, qz]``."""
    pose = msg.pose.pose if isinstance(msg, PoseWithCovarianceStamped) else msg.pose
    p, o = pose.position, pose.orientation
    return [p.x, p.y, p.z, o.w, o.x, o.y, o.z]
