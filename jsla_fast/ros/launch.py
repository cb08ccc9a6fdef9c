"""Starting ROS 1 from Python: the environment Debian's ROS packages leave unset, a roscore on a
free port and ``localize_node`` through ``rosrun``. The tests, the demo's replay and
``bench --ros`` all start ROS through this module; ``ros/env.sh`` prints the same environment for a
shell (``python -m jsla_fast.ros.launch env``). Nothing here imports rospy, so it works before
rospy is importable and says how to install it.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

#: the catkin package (package.xml, scripts/localize_node): ``ros/`` of the source checkout
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "ros"
INSTALL_HINT = "run `make ros` (Debian's ROS 1 packages and the venv's path to rospy; README \"ROS node\")"


class RosError(RuntimeError):
    """ROS is missing or a ROS process did not come up; the text says what to do."""


def why_missing() -> str | None:
    """None when roscore, rosrun and rospy are usable from this interpreter, else what is missing."""
    missing = [tool for tool in ("roscore", "rosrun", "rosbag") if shutil.which(tool) is None]
    if importlib.util.find_spec("rospy") is None:  # found, not imported: importing starts rospy's logging
        missing.append(f"rospy for {sys.executable}")
    if not (PACKAGE_DIR / "package.xml").is_file():
        missing.append(f"the ROS package folder {PACKAGE_DIR} (run from a source checkout)")
    return f"ROS 1 is not usable here: missing {', '.join(missing)}; {INSTALL_HINT}" if missing else None


def require_ros() -> None:
    why = why_missing()
    if why:
        raise RosError(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def ros_environment(port: int = 11311, home: str | Path | None = None, base: dict | None = None) -> dict[str, str]:
    """``base`` (default: this process's) plus what a ROS 1 process needs, with this venv first on PATH
    (so ``rosrun``'s ``#!/usr/bin/env python3`` runs the project's interpreter)."""
    env = dict(os.environ if base is None else base)
    home = Path(home) if home else Path(tempfile.gettempdir()) / "jsla_fast-ros"
    env.update(ROS_MASTER_URI=f"http://localhost:{port}", ROS_HOSTNAME="localhost", ROS_HOME=str(home),
               ROS_LOG_DIR=str(home / "log"), ROS_PACKAGE_PATH=str(PACKAGE_DIR), PYTHONUNBUFFERED="1")
    env.pop("ROS_IP", None)  # ROS_IP would override ROS_HOSTNAME
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir] + [p for p in env.get("PATH", "").split(os.pathsep) if p != bin_dir])
    return env


def master_ready(uri: str) -> bool:
    try:
        code, _, _ = xmlrpc.client.ServerProxy(uri).getSystemState("/jsla_fast_launch")
        return code == 1
    except (OSError, xmlrpc.client.Error):
        return False


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGINT (ROS's clean shutdown), then SIGKILL for the whole process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


class Process:
    """A started ROS process (``self.proc``): a context manager that stops it on exit."""

    proc: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RosMaster(Process):
    """``roscore -p PORT`` on a free port; a context manager. ``env`` is what ROS clients need."""

    def __init__(self, port: int | None = None, home: str | Path | None = None, timeout: float = 30.0) -> None:
        require_ros()
        self.port = port or free_port()
        self.home = Path(home or tempfile.mkdtemp(prefix="jsla_fast-ros-"))
        self.env = ros_environment(self.port, self.home)
        self.uri = self.env["ROS_MASTER_URI"]
        self.log = self.home / "roscore.log"
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["roscore", "-p", str(self.port)], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not master_ready(self.uri):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RosError(f"roscore on port {self.port} did not start; its log:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def system_state(self) -> tuple[list, list, list]:
        """(publishers, subscribers, services), each ``[[topic, [node, ...]], ...]``."""
        return xmlrpc.client.ServerProxy(self.uri).getSystemState("/jsla_fast_launch")[2]

    def subscribers(self, topic: str) -> list[str]:
        return next((nodes for name, nodes in self.system_state()[1] if name == topic), [])

    def publishers(self, topic: str) -> list[str]:
        return next((nodes for name, nodes in self.system_state()[0] if name == topic), [])


def param_arg(name: str, value) -> str:
    """``_name:=value`` as rosrun passes private parameters (YAML: true/false, numbers, strings)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"_{name}:={value}"


class NodeProcess(Process):
    """``rosrun jsla_fast localize_node __name:=NAME image:=IMAGE _param:=value ...`` against ``master``.

    :meth:`wait_ready` returns once the node subscribes to its input (the model is loaded by then).
    """

    def __init__(self, master: RosMaster, name: str = "localize_node", image: str = "/camera/image_raw",
                 **params) -> None:
        self.master, self.name = master, name
        self.ns = f"/{name}"
        self.params = params
        self.input = image + ("/compressed" if params.get("compressed") else "")
        self.log = master.home / f"{name}.log"
        cmd = ["rosrun", "jsla_fast", "localize_node", f"__name:={name}", f"image:={image}"]
        cmd += [param_arg(k, v) for k, v in params.items()]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=master.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 120.0) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while self.ns not in self.master.subscribers(self.input):
            if not self.alive():
                raise RosError(f"{self.name} exited with {self.proc.returncode}; its output:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RosError(f"{self.name} did not subscribe to {self.input} in {timeout:.0f} s; its output:\n"
                               f"{self.output()[-3000:]}")
            time.sleep(0.1)
        return self


def main(argv: list[str] | None = None) -> int:
    """``python -m jsla_fast.ros.launch env [PORT]``: shell ``export`` lines (what ``ros/env.sh`` evaluates)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "env":
        print("usage: python -m jsla_fast.ros.launch env [PORT]", file=sys.stderr)
        return 2
    port = int(args[1]) if len(args) > 1 else 11311
    env = ros_environment(port, Path(os.environ.get("ROS_HOME", Path.home() / ".ros")), base={"PATH": os.environ.get("PATH", "")})
    for key in ("ROS_MASTER_URI", "ROS_HOSTNAME", "ROS_HOME", "ROS_LOG_DIR", "ROS_PACKAGE_PATH", "PATH"):
        print(f"export {key}='{env[key]}'")
    print("unset ROS_IP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
