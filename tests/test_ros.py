"""localize_node against a real roscore (Debian's ROS 1 packages, installed by `make test` through
`make ros`), started here on a free port. The node runs as a user runs it: `rosrun jsla_fast
localize_node`, as its own process; this process is a rospy client that publishes images and
collects poses. A missing ROS fails these tests (it is part of the project), it does not skip them.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jsla_fast.bench import camera_frames, untrained_checkpoint
from jsla_fast.data import rgb_tensor
from jsla_fast.ros.camera_image import ENCODINGS, decode_compressed, decode_image
from jsla_fast.ros.launch import PACKAGE_DIR, NodeProcess, RosMaster, free_port, ros_environment, why_missing

HW = (96, 128)  # camera frames of the tests (H, W)
VAL = {"val_rms_t_m": 0.3, "val_rms_r_deg": 6.0}  # the checkpoint's validation errors -> covariance


@pytest.fixture(scope="session")
def master(tmp_path_factory):
    why = why_missing()
    if why:
        pytest.fail(why)
    with RosMaster(home=tmp_path_factory.mktemp("ros")) as m:
        yield m


@pytest.fixture(scope="session")
def ros(master):
    """This process's rospy node (one per process) and the client helpers."""
    from jsla_fast.ros import client

    client.connect(master.env)
    return client


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    return untrained_checkpoint(path, image_hw=HW, resize=128, crop=112, extra={"epoch": 3, "val": VAL})


@pytest.fixture(scope="session")
def localizer(checkpoint):
    from jsla_fast.runtime import Localizer

    return Localizer(checkpoint)


@pytest.fixture(scope="session")
def node(master, checkpoint):
    with NodeProcess(master, name="loc", image="/cam/image_raw", checkpoint=str(checkpoint), frame_id="world") as n:
        yield n.wait_ready()


@pytest.fixture(scope="session")
def camera(ros, node):
    """(publisher of /cam/image_raw, collector of the node's ~pose, of its ~pose_with_covariance)."""
    import rospy
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
    from sensor_msgs.msg import Image

    pub = rospy.Publisher("/cam/image_raw", Image, queue_size=10)
    poses = ros.Collector(f"{node.ns}/pose", PoseStamped)
    covs = ros.Collector(f"{node.ns}/pose_with_covariance", PoseWithCovarianceStamped)
    ros.wait_connected(pub)
    wait_until(lambda: poses.sub.get_num_connections() and covs.sub.get_num_connections(), "pose topics connected")
    return pub, poses, covs


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def frames(count: int, seed: int) -> list[np.ndarray]:
    return list(camera_frames(count, HW, seed))


def ask(pub, collector, msg, timeout: float = 30.0):
    """Publish ``msg`` and return the node's answer stamped like it (None on timeout)."""
    pub.publish(msg)
    got = collector.wait_stamp(msg.header.stamp, timeout)
    return None if got is None else got[0]


def expected_pose(localizer, rgb: np.ndarray) -> np.ndarray:
    return np.array(localizer.localize(rgb_tensor(rgb)).pose)


def test_poses_equal_predict_with_the_input_stamps_and_frame(tmp_path, master, node, ros, camera, checkpoint, seed):
    from PIL import Image as PILImage

    pub, poses, covs = camera
    images = frames(3, seed)
    files = []
    for k, rgb in enumerate(images):
        files.append(tmp_path / f"frame{k}.png")
        PILImage.fromarray(rgb).save(files[-1])
    out = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(checkpoint), *map(str, files)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    predicted = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(predicted) == 3
    for k, (rgb, want) in enumerate(zip(images, predicted)):
        msg = ros.image_message(rgb, "rgb8", stamp=1000.25 + k)
        pose = ask(pub, poses, msg)
        assert pose is not None, node.output()[-2000:]
        assert pose.header.stamp == msg.header.stamp and pose.header.frame_id == "world"
        p, o = pose.pose.position, pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], want["position"], atol=1e-4)
        np.testing.assert_allclose([o.x, o.y, o.z, o.w], want["orientation_xyzw"], atol=1e-4)  # ROS order
        cov = covs.wait_stamp(msg.header.stamp, 10.0)
        assert cov is not None
        cov = cov[0]
        assert cov.header.frame_id == "world" and ros.pose_vector(cov) == ros.pose_vector(pose)
        sp, so = VAL["val_rms_t_m"] / math.sqrt(3), math.radians(VAL["val_rms_r_deg"]) / math.sqrt(3)
        np.testing.assert_allclose(np.array(cov.pose.covariance).reshape(6, 6), np.diag([sp**2] * 3 + [so**2] * 3),
                                   rtol=1e-9, atol=0)
    # the node leaves TF alone: no transform from the map to the camera frame is broadcast
    assert node.ns not in master.publishers("/tf") and node.ns not in master.publishers("/tf_static")


def test_every_encoding_gives_the_pose_of_its_conversion(node, ros, camera, localizer, seed):
    pub, poses, _ = camera
    rgb = frames(1, seed)[0]
    base = expected_pose(localizer, rgb)
    for k, encoding in enumerate(ENCODINGS):
        msg = ros.image_message(rgb, encoding, stamp=2000 + k, padding=4 * (k % 2))  # some with row padding
        converted = decode_image(encoding, msg.height, msg.width, msg.step, msg.data)
        if encoding[:3] in ("rgb", "bgr"):  # colour encodings carry the same pixels as rgb8
            np.testing.assert_array_equal(converted, rgb)
        pose = ask(pub, poses, msg)
        assert pose is not None, f"{encoding}: no pose\n{node.output()[-2000:]}"
        got = np.array(ros.pose_vector(pose))
        np.testing.assert_allclose(got, expected_pose(localizer, converted), atol=1e-4, err_msg=encoding)
        if encoding[:3] in ("rgb", "bgr"):
            np.testing.assert_allclose(got, base, atol=1e-4, err_msg=encoding)


def test_compressed_input(master, ros, checkpoint, localizer, seed):
    import rospy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CompressedImage

    with NodeProcess(master, name="loc_compressed", image="/cam2/image_raw", checkpoint=str(checkpoint),
                     compressed=True, publish_attention=False) as n:
        n.wait_ready()
        assert n.input == "/cam2/image_raw/compressed"
        pub = rospy.Publisher("/cam2/image_raw/compressed", CompressedImage, queue_size=10)
        poses = ros.Collector(f"{n.ns}/pose", PoseStamped)
        ros.wait_connected(pub)
        wait_until(lambda: poses.sub.get_num_connections(), "pose topic connected")
        rgb = frames(1, seed)[0]
        for k, fmt in enumerate(("png", "jpeg")):
            msg = ros.compressed_message(rgb, stamp=3000 + k, fmt=fmt)
            pose = ask(pub, poses, msg)
            assert pose is not None, f"{fmt}: no pose\n{n.output()[-2000:]}"
            decoded = decode_compressed(msg.format, msg.data)
            if fmt == "png":  # lossless: the very pixels
                np.testing.assert_array_equal(decoded, rgb)
            np.testing.assert_allclose(ros.pose_vector(pose), expected_pose(localizer, decoded), atol=1e-4, err_msg=fmt)
        poses.close()
        pub.unregister()


def test_bad_messages_are_logged_and_dropped_and_the_node_goes_on(node, ros, camera, seed):
    from sensor_msgs.msg import Image

    from jsla_fast.ros.replay import node_diagnostics

    pub, poses, _ = camera
    bad_before = int(node_diagnostics(node.ns)["dropped bad"])
    depth = Image(height=4, width=4, encoding="32FC1", step=16, data=bytes(64))
    short = ros.image_message(frames(1, seed)[0], "rgb8")
    short.data = short.data[:-7]  # data length != step x height
    empty = Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    for k, msg in enumerate((depth, short, empty)):
        msg.header.stamp = ros.rospy.Time(4000 + k)
        pub.publish(msg)
        time.sleep(0.3)  # one at a time: the node keeps only the newest frame
    good = ros.image_message(frames(1, seed + 1)[0], "bgr8", stamp=4100)
    assert ask(pub, poses, good) is not None, node.output()[-3000:]
    assert node.alive()
    assert not [m for m in poses.messages if 4000 <= m.header.stamp.secs < 4100]  # nothing for the bad ones
    wait_until(lambda: "unsupported encoding '32FC1'" in node.output() and "expected step x height" in node.output()
               and "empty image" in node.output(), "the node's warnings")
    wait_until(lambda: int(node_diagnostics(node.ns)["dropped bad"]) >= bad_before + 3, "bad-frame count")


def test_slow_inference_with_a_30hz_camera_keeps_frames_fresh_and_processes_each_once(master, ros, checkpoint):
    import rospy
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import Image

    from jsla_fast.ros.replay import node_diagnostics

    period = 1 / 30
    with NodeProcess(master, name="loc_slow", image="/cam3/image_raw", checkpoint=str(checkpoint),
                     test_delay=0.1, publish_attention=False) as n:
        n.wait_ready()
        pub = rospy.Publisher("/cam3/image_raw", Image, queue_size=1)
        poses = ros.Collector(f"{n.ns}/pose", PoseStamped)
        ros.wait_connected(pub)
        wait_until(lambda: poses.sub.get_num_connections(), "pose topic connected")
        sent = []
        images = frames(8, 3)
        start = time.monotonic()
        for k in range(90):  # 3 s of a 30 Hz camera, stamped when "captured"
            wait = start + k * period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            msg = ros.image_message(images[k % 8], "rgb8", stamp=rospy.Time.now())
            sent.append(msg.header.stamp)
            pub.publish(msg)
        time.sleep(0.5)  # the last frame's answer
        stamps = [m.header.stamp for m in poses.messages]
        d = node_diagnostics(n.ns, at_least={"processed": len(stamps)})
        poses.close()
        pub.unregister()
    assert len(stamps) == len(set(stamps)), "a frame was processed twice"
    assert set(stamps) <= set(sent)
    assert 5 <= len(stamps) < 60, f"{len(stamps)} poses for 90 frames with ~9 Hz inference"
    assert float(d["image age p50 (ms)"]) < period * 1e3, d
    counts = {k: int(d[k]) for k in ("received", "processed", "dropped replaced", "dropped stale", "dropped bad")}
    assert counts["processed"] == len(stamps) and counts["dropped replaced"] > 0, counts
    assert counts["received"] == counts["processed"] + counts["dropped replaced"] + counts["dropped stale"], counts


def test_a_bag_played_with_rosbag_gives_one_pose_per_image_with_the_bags_stamps(tmp_path, master, node, camera,
                                                                                 localizer, seed):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    from jsla_fast.ros.camera_image import encode_image

    _, poses, _ = camera
    store = get_typestore(Stores.ROS1_NOETIC)
    Image, Header, Time = (store.types[t] for t in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                    "builtin_interfaces/msg/Time"))
    images = frames(6, seed)
    stamps = [(1_600_000_000 + k // 2, 400_000_000 * (k % 2)) for k in range(6)]  # 0.4 s apart
    bag = tmp_path / "camera.bag"
    with Writer(bag) as writer:
        conn = writer.add_connection("/cam/image_raw", Image.__msgtype__, typestore=store)
        for rgb, (sec, nsec) in zip(images, stamps):
            h, w, step, data = encode_image(rgb, "bgr8")
            msg = Image(header=Header(seq=0, stamp=Time(sec=sec, nanosec=nsec), frame_id="camera"), height=h, width=w,
                        encoding="bgr8", is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
            writer.write(conn, sec * 10**9 + nsec, store.serialize_ros1(msg, Image.__msgtype__))
    play = subprocess.run(["rosbag", "play", "--quiet", "-d", "1", str(bag)], env=master.env, capture_output=True,
                          text=True, timeout=120)
    assert play.returncode == 0, play.stdout[-2000:] + play.stderr[-2000:]
    wanted = {(s, n) for s, n in stamps}
    wait_until(lambda: len([m for m in poses.messages if (m.header.stamp.secs, m.header.stamp.nsecs) in wanted]) >= 6,
               "a pose for each bag image", timeout=30)
    time.sleep(0.5)
    answers = [m for m in poses.messages if (m.header.stamp.secs, m.header.stamp.nsecs) in wanted]
    assert sorted((m.header.stamp.secs, m.header.stamp.nsecs) for m in answers) == stamps  # one each
    for m in answers:
        k = stamps.index((m.header.stamp.secs, m.header.stamp.nsecs))
        np.testing.assert_allclose(m.pose.position.x, expected_pose(localizer, images[k])[0], atol=1e-4)


def test_attention_image_is_published_to_a_subscriber(node, ros, camera, seed):
    from sensor_msgs.msg import Image

    pub, poses, _ = camera
    attention = ros.Collector(f"{node.ns}/attention", Image)
    wait_until(lambda: attention.sub.get_num_connections(), "attention topic connected")
    msg = ros.image_message(frames(1, seed)[0], "rgb8", stamp=5000)
    assert ask(pub, poses, msg) is not None
    got = attention.wait_stamp(msg.header.stamp, 10.0)
    attention.close()
    assert got is not None
    picture = got[0]
    assert picture.encoding == "rgb8" and picture.header.frame_id == "world"
    assert picture.height >= 100 and len(picture.data) == picture.step * picture.height
    assert np.frombuffer(picture.data, np.uint8).std() > 5  # a picture, not a blank


def test_diagnostics_report_rates_drops_and_latency(node, camera):
    from jsla_fast.ros.replay import node_diagnostics

    d = node_diagnostics(node.ns, at_least={"processed": 1})
    for key in ("input rate (Hz)", "processed rate (Hz)", "dropped replaced", "dropped stale", "dropped bad",
                "latency p50 (ms)", "latency p99 (ms)", "overhead p50 (ms)", "image age p50 (ms)"):
        assert key in d, key
    assert 0 < float(d["latency p50 (ms)"]) < 10_000 and float(d["overhead p50 (ms)"]) < float(d["latency p50 (ms)"])
    assert d["covariance"].startswith("validation errors at epoch 3")


def test_bad_parameters_stop_the_node_at_start_with_a_clear_error(master):
    n = NodeProcess(master, name="loc_bad", image="/cam4/image_raw", device="tpu", max_age=-1, threads=1.5,
                    dtype="float8", backbone="tensorrt", mc_samples=-1)
    try:
        n.proc.wait(120)
    finally:
        n.stop()
    text = n.output()
    assert n.proc.returncode != 0
    for problem in ("~checkpoint is required", "~device 'tpu' must be one of auto, cpu, cuda", "~max_age must be > 0",
                    "~threads must be an integer", "~dtype 'float8' must be one of float32, float16, bfloat16",
                    "~backbone 'tensorrt' must be one of auto, onednn, torchscript", "~mc_samples must be >= 0, got -1"):
        assert problem in text, text[-2000:]


def test_a_model_saved_from_python_runs_the_same_in_predict_the_localizer_and_the_node(tmp_path, master, ros, seed):
    """Built in Python (as with one's own training loop) and saved with save_checkpoint, without
    any preprocessing: the documented default makes it deployable everywhere, with one pose."""
    import rospy
    import torch
    from geometry_msgs.msg import PoseStamped
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    from jsla_fast import JSLA, JSLAConfig, save_checkpoint
    from jsla_fast.runtime import Localizer

    torch.manual_seed(seed)
    path = save_checkpoint(JSLA(JSLAConfig(task="pose")).eval(), tmp_path / "mine.pt")
    rgb = frames(1, seed)[0]
    PILImage.fromarray(rgb).save(tmp_path / "frame.png")
    out = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(path), str(tmp_path / "frame.png")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    predicted = json.loads(out.stdout.splitlines()[0])
    mine = Localizer(path).localize(rgb_tensor(rgb)).pose
    np.testing.assert_allclose(mine[:3], predicted["position"], atol=1e-5)
    with NodeProcess(master, name="loc_mine", image="/cam6/image_raw", checkpoint=str(path)) as n:
        n.wait_ready()
        pub = rospy.Publisher("/cam6/image_raw", Image, queue_size=10)
        poses = ros.Collector(f"{n.ns}/pose", PoseStamped)
        ros.wait_connected(pub)
        wait_until(lambda: poses.sub.get_num_connections(), "pose topic connected")
        pose = ask(pub, poses, ros.image_message(rgb, "rgb8", stamp=77.5))
        assert pose is not None, n.output()[-2000:]
        assert "[ERROR]" not in n.output(), n.output()[-2000:]
    p, o = pose.pose.position, pose.pose.orientation
    np.testing.assert_allclose([p.x, p.y, p.z], predicted["position"], atol=1e-4)
    np.testing.assert_allclose([o.x, o.y, o.z, o.w], predicted["orientation_xyzw"], atol=1e-4)


def test_per_image_sigmas_are_the_nodes_covariance(tmp_path, master, ros, seed):
    """A model with uncertainty="aleatoric": each frame's covariance is its own predicted variances
    (here never calibrated: factor 1, and the node says so), equal to predict's sigmas squared."""
    import rospy
    import torch
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from PIL import Image as PILImage
    from sensor_msgs.msg import Image

    from jsla_fast import JSLA, JSLAConfig, save_checkpoint

    torch.manual_seed(seed)
    model = JSLA(JSLAConfig(task="pose", uncertainty="aleatoric")).eval()
    with torch.no_grad():  # sigmas that differ by axis, as after training
        model.head.start_at(torch.cat([torch.tensor([0.0, 0, 0, 1, 0, 0, 0]), torch.linspace(-3, 1, 6)]))
    path = save_checkpoint(model, tmp_path / "sigma.pt")
    images = frames(2, seed)
    want = []
    for k, rgb in enumerate(images):
        PILImage.fromarray(rgb).save(tmp_path / f"f{k}.png")
    out = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(path),
                          *(str(tmp_path / f"f{k}.png") for k in range(2))], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    want = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(w["sigma_calibrated"] is False for w in want)
    with NodeProcess(master, name="loc_sigma", image="/cam9/image_raw", checkpoint=str(path)) as n:
        n.wait_ready()
        assert "covariance from per-frame predicted sigmas, not calibrated (factor 1)" in n.output()
        pub = rospy.Publisher("/cam9/image_raw", Image, queue_size=10)
        covs = ros.Collector(f"{n.ns}/pose_with_covariance", PoseWithCovarianceStamped)
        ros.wait_connected(pub)
        wait_until(lambda: covs.sub.get_num_connections(), "covariance topic connected")
        for k, rgb in enumerate(images):
            cov = ask(pub, covs, ros.image_message(rgb, "rgb8", stamp=50.0 + k))
            assert cov is not None, n.output()[-2000:]
            sigma = want[k]["position_sigma_m"] + want[k]["orientation_sigma_rad"]
            np.testing.assert_allclose(np.array(cov.pose.covariance).reshape(6, 6), np.diag(np.square(sigma)),
                                       rtol=1e-4, atol=0)


def test_a_checkpoint_that_cannot_run_stops_the_node_at_start_up(tmp_path, master):
    """8x8 inputs shrink to nothing inside GoogLeNet: one clear error at start-up, a non-zero exit,
    not an error per frame; predict says the same and exits 2."""
    import torch

    from jsla_fast import JSLA, JSLAConfig, Normalization, save_checkpoint

    path = save_checkpoint(JSLA(JSLAConfig(task="pose")).eval(), tmp_path / "tiny.pt",
                           normalization=Normalization(torch.zeros(3, 1, 1), size=(8, 8), crop=8))
    n = NodeProcess(master, name="loc_tiny", image="/cam7/image_raw", checkpoint=str(path))
    try:
        n.proc.wait(120)
    finally:
        n.stop()
    text = n.output()
    assert n.proc.returncode != 0, text[-2000:]
    assert f"could not start with {path}: the JSLA model cannot run (RuntimeError: " in text, text[-2000:]
    assert "Output size is too small" in text and "listening" not in text
    out = subprocess.run([sys.executable, "-m", "jsla_fast.predict", "--checkpoint", str(path), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and f"checkpoint {path} cannot run (RuntimeError: " in out.stderr, out.stderr[-2000:]
    # a checkpoint for another task: refused at start-up too, naming the task
    scene = save_checkpoint(JSLA(JSLAConfig(task="scene", num_classes=5, steps=2)).eval(), tmp_path / "scene.pt")
    n = NodeProcess(master, name="loc_scene", image="/cam8/image_raw", checkpoint=str(scene))
    try:
        n.proc.wait(120)
    finally:
        n.stop()
    assert n.proc.returncode != 0, n.output()[-2000:]
    assert f"{scene} holds a scene model (task 'scene', 5 classes); localize_node publishes camera poses" in n.output()
    # MC dropout on a model with nothing to sample would publish a zero covariance: refused at start-up
    plain = save_checkpoint(JSLA(JSLAConfig(task="pose", dropout=0.0, steps=1, layers=("5b",))).eval(),
                            tmp_path / "plain.pt")
    n = NodeProcess(master, name="loc_nomc", image="/cam8/image_raw", checkpoint=str(plain), mc_samples=8)
    try:
        n.proc.wait(120)
    finally:
        n.stop()
    assert n.proc.returncode != 0, n.output()[-2000:]
    assert (f"~mc_samples 8: {plain} has no dropout and no predicted sigmas, so MC dropout would publish a zero "
            "covariance") in n.output() and "listening" not in n.output()


def test_catkin_workspace_builds_the_package_and_its_rostest_passes(tmp_path, checkpoint):
    """The catkin path: CMakeLists (catkin_install_python, add_rostest) configured with this venv's
    Python, then `make run_tests` runs ros/test/localize_smoke.test through rostest."""
    env = ros_environment(free_port(), tmp_path / "home")
    env.pop("ROS_MASTER_URI")  # rostest starts its own master
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(PACKAGE_DIR), "-B", str(build), f"-DPYTHON_EXECUTABLE={sys.executable}",
                                "-DCATKIN_ENABLE_TESTING=ON", f"-DJSLA_FAST_TEST_CHECKPOINT={checkpoint}",
                                f"-DCATKIN_DEVEL_PREFIX={build / 'devel'}"], env=env, capture_output=True, text=True,
                               timeout=300)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    script = build / "devel" / "lib" / "jsla_fast" / "localize_node"
    assert script.is_file() and os.access(script, os.X_OK)
    assert script.read_text().startswith(f"#!{sys.executable}")
    run = subprocess.run(["make", "-C", str(build), "run_tests"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    # `make run_tests` succeeds even when a test fails: read the results as catkin_test_results does
    results = {p.name: ET.parse(p).getroot() for p in (build / "test_results" / "jsla_fast").glob("*.xml")}
    assert "rosunit-localize_smoke.xml" in results, run.stdout[-3000:]
    assert results["rosunit-localize_smoke.xml"].get("tests") == "1"
    for name, suite in results.items():
        assert suite.get("failures") == "0" and suite.get("errors") == "0", f"{name}\n{run.stdout[-3000:]}"


def test_bench_ros_reports_the_nodes_overhead(tmp_path, master):
    """`python -m jsla_fast.bench --ros` (its own roscore and node; the numbers go to docs/PERFORMANCE.md)."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "jsla_fast.bench", "--ros", "--quick", "--threads", "2", "--json",
                          str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert row["name"] == "ros_node" and row["frames"] == row["answered"] == 20
    assert 0 < row["overhead_p50_ms"] <= row["overhead_p99_ms"] < row["median_ms"]
    assert "overhead (publish - receive - model) p50" in run.stdout


def test_env_script_sets_what_ros_needs():
    script = f"source {PACKAGE_DIR / 'env.sh'} 12345 && env"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROS_")}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert got["ROS_MASTER_URI"] == "http://localhost:12345" and got["ROS_HOSTNAME"] == "localhost"
    assert got["ROS_PACKAGE_PATH"] == str(PACKAGE_DIR) and got["ROS_LOG_DIR"].startswith(got["ROS_HOME"])
    assert got["PATH"].split(":")[0] == str(PACKAGE_DIR.parent / ".venv" / "bin")
    rospack = subprocess.run(["bash", "-c", f"source {PACKAGE_DIR / 'env.sh'} && rospack find jsla_fast"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert rospack.stdout.strip() == str(PACKAGE_DIR), rospack.stderr


def test_roslaunch_starts_the_node_with_the_packages_config(master, ros, checkpoint):
    from jsla_fast.ros.launch import stop_process

    log = master.home / "roslaunch.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["roslaunch", "jsla_fast", "localize.launch", f"checkpoint:={checkpoint}",
                                 "image:=/cam5/image_raw"], env=master.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_until(lambda: "/localize_node" in master.subscribers("/cam5/image_raw") or proc.poll() is not None,
                   "the launched node's subscription", timeout=120)
        assert proc.poll() is None, log.read_text()[-3000:]
        import rospy

        assert rospy.get_param("/localize_node/max_age") == 0.5  # from ros/config/localize.yaml
        assert rospy.get_param("/localize_node/checkpoint") == str(checkpoint)  # the launch argument wins
    finally:
        stop_process(proc)
