"""Stage 2 (geometry SFT), as the seed's users run it: `python sft_train.py [--key value ...]`.

Same as `geovlm sft`; the default recipe is configs/sft.yaml.
"""

import sys

from geovlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["sft", *sys.argv[1:]]))
