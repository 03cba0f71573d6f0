"""posepipe's pipeline, one subpackage per step of the data flow:

    io/         objects -> frames (ranged reads, PyAV decoding), and the Parquet store
    perframe/   frames -> detections -> 2D keypoints, SMPL (model workers, per shard)
    temporal/   detections -> tracks -> kept rows -> 3D (per video, in frame order)
    run/        the job: options, driver, scheduling on Ray, progress
    downstream/ export, render, evaluate (read a job's committed output)
    measure/    `posepipe bench`
"""
