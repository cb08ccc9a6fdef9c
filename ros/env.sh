# Source this (bash/zsh) for a shell that can run the node: `source ros/env.sh [PORT]`.
# Sets ROS_MASTER_URI (localhost:PORT, default 11311), ROS_HOSTNAME, ROS_HOME, ROS_LOG_DIR,
# ROS_PACKAGE_PATH (this folder) and puts the project's .venv first on PATH. Run `make ros` once before.
_jsla_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
eval "$("$_jsla_root/.venv/bin/python" -m jsla_fast.ros.launch env "${1:-11311}")"
unset _jsla_root
