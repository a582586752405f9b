"""Stage 3: reinforcement learning with verifiable rewards (GRPO through TRL)."""
