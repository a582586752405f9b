"""Run by tests/test_ddp.py, once alone and once under torchrun with two gloo processes."""

import sys

from geovlm.train.config import DataSource, TrainConfig
from geovlm.train.run import train

data, out, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
train(TrainConfig(
    stage="sft", preset="tiny", lm_trainable="last_n", lm_last_n_layers=1, data=[DataSource(path=data)],
    max_steps=3, per_device_batch_size=batch, learning_rate=1e-2, warmup_steps=0.0, train_sampling_strategy="sequential",
    report_to="none", num_workers=0, progress_bar=False, save_steps=1000, logging_steps=1, output_dir=out,
    max_length=128,
))
