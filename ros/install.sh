#!/bin/sh
# ROS 1 for jsla_fast on Debian/Ubuntu: Debian's ROS packages (apt, only those missing) and a .pth
# file that *appends* their dist-packages to the venv's sys.path (rospy is found, our numpy and
# torch keep priority; PYTHONPATH would shadow them). librostest-dev is for catkin workspaces
# (add_rostest). Idempotent: `make ros` runs it every time.
# Usage: ros/install.sh [VENV_PYTHON]   (default .venv/bin/python)
set -eu
PY=${1:-.venv/bin/python}
PKGS="ros-core rosbash python3-rospy python3-rostest python3-rosbag python3-sensor-msgs python3-geometry-msgs
python3-std-msgs python3-diagnostic-msgs python3-diagnostic-updater librostest-dev"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "ros/install.sh: needs apt-get (Debian bookworm or Ubuntu) to install:$missing" >&2; exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "ros/install.sh: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  # a fresh image may have no package lists yet: update once if the first try can't find them
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing; }
fi
# rospy is pure Python, but some of its dependencies are compiled for the system python3
sys_ver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
venv_ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$sys_ver" != "$venv_ver" ]; then
  echo "ros/install.sh: the venv runs Python $venv_ver but Debian's rospy is built for $sys_ver;" \
       "create the venv with /usr/bin/python3 (make clean && make PYTHON=/usr/bin/python3 test)" >&2; exit 1
fi
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo /usr/lib/python3/dist-packages > "$site/zz_ros_dist_packages.pth"
"$PY" -c 'import rospy, sensor_msgs.msg, geometry_msgs.msg, diagnostic_updater' || {
  echo "ros/install.sh: rospy still does not import from $PY" >&2; exit 1; }
