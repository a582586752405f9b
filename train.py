"""Stage 1 (projector pretraining), as the seed's users run it: `python train.py [--key value ...]`.

Same as `geovlm pretrain`; the default recipe is configs/pretrain.yaml.
"""

import sys

from geovlm.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
