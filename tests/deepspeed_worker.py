"""Run by tests/test_deepspeed.py under torchrun (two gloo processes): several training runs in one launch,
so that the processes start, import and join once (each DeepSpeed run costs seconds, a launch many more).

argv: a JSON file holding a list of runs, each {"out", "deepspeed" (or null), "stop_at" (or null),
"state_out" (or null), "cli" (or false), "fields": {TrainConfig overrides, or RLConfig ones with
"stage": "rl" (GRPO through TRL; "data" a list of {path, images})}}. "stop_at": the run raises at that step (a crash
after the checkpoint before it); "state_out": rank 0 writes the trained weights, gathered from every rank,
to that file when training ends (what the saved folder must reproduce); "cli": the run goes through
`geovlm <stage> --config ... --deepspeed ...` (the last run: the command ends the process group)."""

import json
import os
import sys
import time

import torch
import yaml
from transformers import TrainerCallback

from geovlm.train.config import DataSource, TrainConfig
from geovlm.train.rl.config import RLConfig
from geovlm.train.rl.run import train_rl
from geovlm.train.run import end_distributed, train
from training_callbacks import StopAt  # tests/ is sys.path[0]: the folder of this script


class SaveTrainedState(TrainerCallback):
    """At the end of training, the full weights as the run holds them (ZeRO-3: gathered from the shards)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, args, state, control, model=None, **kwargs):
        import deepspeed

        params = list(model.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if state.is_world_process_zero:
                torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, self.path)


def reset_between_runs() -> None:
    """What one run leaves behind in the process for the next (a new process starts without it)."""
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state(reset_partial_state=False)
    os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)


with open(sys.argv[1]) as plan:
    runs = json.load(plan)
for run in runs:
    if run.get("cli"):  # as a user types it, last (the command ends the process group)
        from geovlm.cli import main

        recipe = f"{run['out']}.yaml"
        with open(recipe, "w") as f:
            yaml.safe_dump(dict(run["fields"], data=[run["fields"]["data"]]), f)
        argv = [run["fields"]["stage"], "--config", recipe, "--output-dir", run["out"], "--deepspeed", run["deepspeed"]]
        assert main(argv) == 0, argv
        print(f"[worker] done: geovlm {' '.join(argv)}", flush=True)
        continue
    started = time.perf_counter()
    fields = dict(run["fields"])
    rl = fields.get("stage") == "rl"
    fields["data"] = [DataSource.coerce(d) for d in fields["data"]] if rl else [DataSource(path=fields["data"])]
    config = (RLConfig if rl else TrainConfig)(output_dir=run["out"], deepspeed=run.get("deepspeed"), **fields)
    callbacks = [SaveTrainedState(run["state_out"])] if run.get("state_out") else []
    if run.get("stop_at"):
        callbacks.append(StopAt(run["stop_at"]))
    try:
        (train_rl if rl else train)(config, callbacks=callbacks)
    except KeyboardInterrupt:
        if not run.get("stop_at"):
            raise
    reset_between_runs()
    print(f"[worker] done: {run['out']} ({time.perf_counter() - started:.1f} s)", flush=True)
end_distributed()
