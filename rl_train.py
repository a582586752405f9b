"""Stage 3 (GRPO with verifiable rewards), beside train.py and sft_train.py: `python rl_train.py [--key value ...]`.

Same as `geovlm rl`; the default recipe is configs/rl.yaml.
"""

import sys

from geovlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["rl", *sys.argv[1:]]))
