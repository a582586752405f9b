"""`geovlm bench`: GeoVLM's training step and generation against the seed code's way, side by side.

Sections (see `docs/BENCHMARKS.md` for the method and the latest tables):

* ``roofline``   a large `torch.mm`, FLOP/s: the machine's practical limit for the steps below;
* ``stage1``     a projector-only training step at batch 4, GeoVLM vs seed-style (`seed_style.py`);
* ``stage2``     the same with the last N LM layers trainable (SFT);
* ``generation`` `GeoVLM.generate` (KV cache) vs the seed's no-cache loop, greedy outputs compared;
* ``eval``       questions/s of `geovlm.serve.chat.answer` at several batch sizes;
* ``data``       samples/s of GeoVLMDataset + GeoVLMCollator through a DataLoader.

Entry points: `geovlm bench` (`geovlm.bench.cli`), `python bench/run.py`, `python -m geovlm.bench.run`.
"""
