"""Run inside the pinned OpenCV 4 venv (tests/models/test_warp.py): OpenCV 4.x's own answers.

Reads an npz of cases and writes an npz of cv2's results:
- ``affine_<i>``: ``cv2.getAffineTransform(src_<i>, dst_<i>)``;
- ``warp_<i>``: ``cv2.warpAffine(image_<i>, matrix_<i>, size_<i>, INTER_LINEAR)``, black border;
- ``resize_<i>``: ``cv2.resize(image_<i>, size_<i>, interpolation=INTER_LINEAR)``.
"""
import sys

import cv2
import numpy as np

cases = np.load(sys.argv[1])
out = {"version": np.array(cv2.__version__)}
for key in cases.files:
    if key.startswith("src_"):
        i = key[4:]
        out[f"affine_{i}"] = cv2.getAffineTransform(cases[key], cases[f"dst_{i}"])
    elif key.startswith("warp_image_"):
        i = key[11:]
        w, h = (int(v) for v in cases[f"warp_size_{i}"])
        out[f"warp_{i}"] = cv2.warpAffine(cases[key], cases[f"warp_matrix_{i}"], (w, h), flags=cv2.INTER_LINEAR)
    elif key.startswith("resize_image_"):
        i = key[13:]
        w, h = (int(v) for v in cases[f"resize_size_{i}"])
        out[f"resize_{i}"] = cv2.resize(cases[key], (w, h), interpolation=cv2.INTER_LINEAR)
np.savez(sys.argv[2], **out)
