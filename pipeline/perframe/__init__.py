"""Per-frame work on a model worker: frames -> person detections -> 2D keypoints and SMPL, per shard."""
