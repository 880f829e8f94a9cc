"""The data pipeline: the named datasets and their class tables (datasets/), list files and samples (dataset.py),
loaders and samplers (loader.py), training augmentation (transform.py), label PNGs (label_png.py), the pre-flight
check of every list line (check.py), class pixel counts (class_counts.py), the generated demo data (demo_data.py)
and the preparation of raw downloads (preparation.py, run as `python -m util.data.prepare`)."""
