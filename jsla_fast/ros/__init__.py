"""The ROS 1 side of jsla_fast (the catkin package itself is ``ros/`` at the top of the checkout).

``camera_image`` (messages -> RGB, no cv_bridge) and ``latest_frame`` (the newest-frame mailbox) do
not need ROS; ``launch`` starts roscore and the node without importing rospy; ``node`` is
``localize_node``; ``client`` and ``replay`` talk to a running node (tests, demo, ``bench --ros``).
"""
