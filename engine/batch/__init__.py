"""Many images on one warm pipeline: the inputs (sources), the per-image work (work), the outputs, resume and
the bounded queue that overlaps the encoders of the next image with the rest of the current one (runner),
the run's COCO file (coco), and the same per-image work on a Ray Data actor pool (ray_data)."""
