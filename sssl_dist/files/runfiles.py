"""The names of a training run's files and folders, in one place.

A run directory (`storage_path/name`) holds its checkpoints, each a folder of the files below:
every epoch's (`epoch-0003`) holds STATE, HISTORY and CONFIG; the finished run's (FINAL) adds
RESULT, SONGS and FOLD_IDS. A report's `fold-K/` folder holds REPORT_FOLD_FILES, SVM_SONGS
where the SVM learned from cross-fitted probabilities, and MODEL.
"""

STATE = "state.pt"  # tensors and plain values only: loads with weights_only=True
HISTORY = "history.json"  # per-epoch metrics
CONFIG = "config.yaml"  # the resolved SSSLConfig
RESULT = "result.json"  # song-level metrics of the finished run
SONGS = "songs.json"  # per-song segment probabilities
FOLD_IDS = "fold_ids.json"  # song ids of train / val / test
SVM_SONGS = "svm_songs.json"  # the training songs' probabilities the SVM learned from
MODEL = "model.sssl"  # the exported artifact (export.py)
PROGRESS = "progress.jsonl"  # rank 0's one line per epoch, tailed by the driver
# Written by the driver after Ctrl-C or SIGTERM: the run stops after the epoch in flight.
STOP = "stop-requested"

FINAL = "final"  # the finished run's checkpoint
# The last warm-up epoch's checkpoint, kept apart from the rotating ones for runs that share
# the warm-up (warmup.py).
WARMUP = "warmup"

# A report directory's identity: the shard set it was trained on (its config is CONFIG).
REPORT_SHARDS = "shards.json"
# A sweep directory's identity (`sssl tune`); a sweep also writes a summary.md and plots.
SWEEP = "sweep.json"

# What a report's fold-K/ folder always holds, copied from the finished run.
REPORT_FOLD_FILES = (RESULT, HISTORY, SONGS, FOLD_IDS)
