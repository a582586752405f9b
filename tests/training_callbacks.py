"""Trainer callbacks the training tests share (the single-process ones and tests/deepspeed_worker.py)."""

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """Simulates a crash: raises when training reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated crash at step {self.step}")
