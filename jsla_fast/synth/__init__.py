"""Synthetic indoor scenes for training and testing without downloads.

A seeded generator builds a textured, furnished box room (world z up, floor at z = 0), walks a
hand-held camera through it and ray-casts the frames with numpy. It writes either one room in the
7-Scenes layout (camera-pose regression) or several rooms in the MIT-67 layout (scene classes)::

    python -m jsla_fast.synth --out data/synth --task pose     # seq-NN/frame-NNNNNN.{color.png,pose.txt}
    python -m jsla_fast.synth --out data/rooms --task scene    # Images/<class>/*.jpg + list files

Cameras follow the OpenCV / 7-Scenes convention (x right, y down, z forward), poses are 4x4
camera-to-world matrices in metres; the same seed and arguments give byte-identical files.
"""
from .camera import Intrinsics, camera_to_world, look_rotation
from .datasets import class_name, generate_pose_scene, generate_scene_classes
from .files import read_pose
from .render import Lighting, Rendering, render
from .room import Box, Scene, make_room
from .trajectory import random_viewpoints, walk

__all__ = ["generate_pose_scene", "generate_scene_classes", "render", "Rendering", "Lighting", "Intrinsics",
           "make_room", "Scene", "Box", "walk", "random_viewpoints", "camera_to_world", "look_rotation",
           "read_pose", "class_name"]
