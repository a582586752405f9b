"""A GRPO reward for tests: a random model never answers right (accuracy 0 in every group, so no
advantage), but its replies' lengths differ within a group, so this reward gives non-zero advantages.
Named as "rl_test_rewards:characters" in a config (tests/ on sys.path)."""

from geovlm.train.rl.rewards import completion_text


def characters(completions, **columns):
    return [len(completion_text(c)) / 100 for c in completions]
