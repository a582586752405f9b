"""`GeoVLMCollator`: samples of a :class:`~geovlm.data.dataset.GeoVLMDataset` to one padded batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from geovlm.constants import IGNORE_INDEX

SKIPPED_KEY = "skipped"


class GeoVLMCollator:
    """Pad to the longest sample of the batch and stack the images.

    Args:
        pad_token_id: id written into padded ``input_ids`` positions (the tokenizer's pad token).
        pad_to_multiple_of: round the padded length up to a multiple of this (tensor-core friendly).
        padding_side: ``"right"`` for training (the default), ``"left"`` for generation batches.
        label_pad_id: label of padded positions; -100 is ignored by the loss.

    The batch holds:

    * ``input_ids``, ``labels``, ``attention_mask``: LongTensors (batch, length); the mask is 1 on real
      tokens and 0 on padding.
    * ``pixel_values``: (n_images, 3, H, W), one row per image in reading order (sample by sample), the
      order in which :class:`GeoVLM` fills the ``<|image_pad|>`` runs. The key is absent when no sample of
      the batch has an image (text-only batches).
    * ``skipped``: a list of plain dicts ``{"reason", "id", "path", "detail"}``, one per bad sample that
      was replaced by a substitute in this batch (usually empty). The training loop must pop it before
      calling the model and feed it to a :class:`~geovlm.data.skips.SkipCounter`.

    Batches are never empty and never contain stand-ins: the dataset replaces a bad sample by another
    real one and reports the skip here (see geovlm.data.dataset for why).
    """

    def __init__(
        self,
        pad_token_id: int,
        *,
        pad_to_multiple_of: int | None = None,
        padding_side: str = "right",
        label_pad_id: int = IGNORE_INDEX,
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}")
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; give the tokenizer's pad token id")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side
        self.label_pad_id = label_pad_id

    @classmethod
    def from_processor(cls, processor: Any, **kwargs: Any) -> GeoVLMCollator:
        return cls(processor.tokenizer.pad_token_id, **kwargs)

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        ids = [torch.as_tensor(s["input_ids"], dtype=torch.long) for s in samples]
        labels = [torch.as_tensor(s["labels"], dtype=torch.long) for s in samples]
        for n, (i, lab) in enumerate(zip(ids, labels, strict=True)):
            if i.ndim != 1 or i.shape != lab.shape:
                raise ValueError(
                    f"sample {n}: input_ids {tuple(i.shape)} and labels {tuple(lab.shape)} must be equal 1-D"
                )
        length = max(len(i) for i in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        batch_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(samples), length), self.label_pad_id, dtype=torch.long)
        mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, (i, lab) in enumerate(zip(ids, labels, strict=True)):
            span = slice(0, len(i)) if self.padding_side == "right" else slice(length - len(i), length)
            batch_ids[row, span] = i
            batch_labels[row, span] = lab
            mask[row, span] = 1

        batch: dict[str, Any] = {"input_ids": batch_ids, "attention_mask": mask, "labels": batch_labels}
        images = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
        images = [p if p.ndim == 4 else p.unsqueeze(0) for p in images]  # accept (3, H, W) too
        if images:
            batch["pixel_values"] = torch.cat(images)
        batch[SKIPPED_KEY] = [dict(record) for s in samples for record in s.get(SKIPPED_KEY) or ()]
        return batch
