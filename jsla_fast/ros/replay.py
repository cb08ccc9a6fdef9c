"""Replay images through ``localize_node`` and report its accuracy and latency.

    python -m jsla_fast.ros.replay --checkpoint RUN/best.pt --data DATA --format 7scenes [--limit N] [--json OUT]

Starts a roscore on a free port and the node (``rosrun jsla_fast localize_node``), publishes the
split's images one at a time as ``sensor_msgs/Image`` (rgb8, stamped now), waits for each pose
(matched by stamp) and compares it with the ground truth. Latency is measured by this client
(publish -> pose received); the node's own overhead (publish - receive - model time) comes from
its ``/diagnostics``. The demo ends with this; ``bench --ros`` uses the same loop.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("jsla_fast.ros.replay")


@dataclass
class ReplayResult:
    stamps: list = field(default_factory=list)  #: rospy.Time of each published image
    poses: list = field(default_factory=list)  #: [x,y,z,qw,qx,qy,qz] per image, None when none came
    latency_ms: list = field(default_factory=list)  #: publish -> pose received, per answered image
    diagnostics: dict = field(default_factory=dict)  #: the node's last /diagnostics values

    @property
    def answered(self) -> int:
        return sum(p is not None for p in self.poses)


def node_diagnostics(node_name: str, timeout: float = 5.0, at_least: dict[str, int] | None = None) -> dict[str, str]:
    """The key/values of ``node_name``'s relocalization status on /diagnostics (the first message whose
    integer counters reach ``at_least``)."""
    import rospy
    from diagnostic_msgs.msg import DiagnosticArray

    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    name = f"{node_name.lstrip('/')}: relocalization"

    def on(msg):
        for status in msg.status:
            if status.name == name:
                values = {kv.key: kv.value for kv in status.values}
                if all(int(values.get(k, -1)) >= v for k, v in (at_least or {}).items()):
                    found.update(values)

    sub = rospy.Subscriber("/diagnostics", DiagnosticArray, on, queue_size=10)
    try:
        while not found and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.unregister()
    if not found:
        raise TimeoutError(f"no /diagnostics from {node_name} within {timeout} s")
    return found


def replay(images, node_ns: str, image_topic: str = "/camera/image_raw", timeout: float = 30.0,
           encoding: str = "rgb8") -> ReplayResult:
    """Closed loop: publish each RGB ``uint8 [H,W,3]`` of ``images``, wait for its pose, then the next.
    The client must be connected (:func:`jsla_fast.ros.client.connect`) and the node ready."""
    import rospy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image

    from .client import Collector, image_message, pose_vector, wait_connected

    pub = rospy.Publisher(image_topic, Image, queue_size=1)
    poses = Collector(f"{node_ns}/pose", PoseStamped)
    result = ReplayResult()
    try:
        wait_connected(pub)
        while poses.sub.get_num_connections() == 0:  # the node's ~pose must reach us too
            time.sleep(0.02)
        for rgb in images:
            msg = image_message(rgb, encoding, rospy.Time.now())
            sent = time.monotonic()
            pub.publish(msg)
            got = poses.wait_stamp(msg.header.stamp, timeout)
            result.stamps.append(msg.header.stamp)
            result.poses.append(pose_vector(got[0]) if got else None)
            if got:
                result.latency_ms.append((got[1] - sent) * 1e3)
            else:
                log.warning("no pose for the image stamped %s within %.0f s", msg.header.stamp, timeout)
        result.diagnostics = node_diagnostics(node_ns, at_least={"processed": result.answered})
    finally:
        poses.close()
        pub.unregister()
    return result


def latency_summary(result: ReplayResult) -> dict:
    lat = np.asarray(result.latency_ms)
    d = result.diagnostics
    return {
        "frames": len(result.poses), "answered": result.answered,
        "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "overhead_p50_ms": float(d["overhead p50 (ms)"]), "overhead_p99_ms": float(d["overhead p99 (ms)"]),
        "node_latency_p50_ms": float(d["latency p50 (ms)"]), "backend": d.get("backend"),
        "dropped": {k: int(d[f"dropped {k}"]) for k in ("replaced", "stale", "bad")},
    }


def run(checkpoint: str | Path, images, node_params: dict | None = None, timeout: float = 30.0) -> ReplayResult:
    """Start roscore + the node with ``checkpoint``, replay ``images`` (closed loop), stop both."""
    from .client import connect
    from .launch import NodeProcess, RosMaster

    with RosMaster() as master, NodeProcess(master, checkpoint=str(checkpoint), publish_attention=False,
                                            **(node_params or {})) as node:
        node.wait_ready()
        connect(master.env)
        result = replay(images, node.ns, timeout=timeout)
        if not node.alive():
            raise RuntimeError(f"localize_node exited during the replay:\n{node.output()[-3000:]}")
        return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("rospy").setLevel(logging.WARNING)  # its INFO chatter would mix into the report
    ap = argparse.ArgumentParser(prog="python -m jsla_fast.ros.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--format", default="7scenes", help="cambridge | 7scenes | csv")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, help="replay at most this many images (evenly spread)")
    ap.add_argument("--threads", type=int, default=0, help="the node's CPU threads (0: torch's default)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)

    from ..config import DataConfig
    from ..data import DataError, read_records
    from ..metrics import pose_metrics
    from .launch import RosError

    try:
        records = read_records(args.data, args.format, args.split, DataConfig())
    except DataError as e:
        log.error("%s", e)
        return 2
    picks = range(len(records.paths))
    if args.limit and args.limit < len(records.paths):
        picks = np.linspace(0, len(records.paths) - 1, args.limit).round().astype(int).tolist()
    from PIL import Image as PILImage

    def images():
        for i in picks:
            with PILImage.open(records.paths[i]) as im:
                yield np.asarray(im.convert("RGB"))

    try:
        result = run(args.checkpoint, images(), {"threads": args.threads, "backend": args.backend})
    except RosError as e:
        log.error("%s", e)
        return 2
    import torch

    answered = [k for k, p in enumerate(result.poses) if p is not None]
    report = latency_summary(result)
    if answered:
        pred = torch.tensor([result.poses[k] for k in answered], dtype=torch.float64)
        truth = records.targets[[picks[k] for k in answered]].double()
        report.update(pose_metrics(pred, truth))
    report.update(checkpoint=str(args.checkpoint), data=str(args.data), split=args.split)
    print(f"ROS replay: {report['answered']}/{report['frames']} {args.split} images answered by localize_node "
          f"(backend {report['backend']})")
    if answered:
        print(f"  accuracy: median {report['median_t_m']:.3f} m, {report['median_r_deg']:.2f} deg "
              f"(mean {report['mean_t_m']:.3f} m, {report['mean_r_deg']:.2f} deg)")
        print(f"  latency (publish -> pose, this client): p50 {report['latency_p50_ms']:.1f} ms, "
              f"p99 {report['latency_p99_ms']:.1f} ms")
    print(f"  node overhead (publish - receive - model): p50 {report['overhead_p50_ms']:.2f} ms, "
          f"p99 {report['overhead_p99_ms']:.2f} ms")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["answered"] == report["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
