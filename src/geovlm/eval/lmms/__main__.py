"""`python -m geovlm.eval.lmms` prints the folder of GeoVLM's lmms-eval tasks, for `--include_path`."""

from geovlm.eval.lmms import TASKS_DIR

print(TASKS_DIR)
