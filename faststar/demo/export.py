"""Write the demo weights from the last checkpoints of the training runs.

    python -m faststar.demo.export --vae-run /work/demo_runs/vae \\
        --transformer-run /work/demo_runs/transformer --output faststar/demo/weights
"""

import argparse
import logging
from pathlib import Path

import torch

from .runs import CHECKPOINT_NAME
from .weights import WEIGHTS_DIR, export_transformer, export_vae

logger = logging.getLogger(__name__)


def read_checkpoint(run: "str | Path") -> dict:
    path = Path(run) / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train that model first")
    return torch.load(path, weights_only=False, map_location="cpu")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vae-run", default="/work/demo_runs/vae", help="VAE run folder")
    parser.add_argument("--transformer-run", default="/work/demo_runs/transformer", help="transformer run folder")
    parser.add_argument("--output", default=str(WEIGHTS_DIR), help="folder for the three .safetensors files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    vae = read_checkpoint(args.vae_run)
    export_vae(vae["model"], args.output, vae["step"])
    transformer = read_checkpoint(args.transformer_run)
    export_transformer(transformer["model"], transformer["text_encoder"], args.output, transformer["step"])


if __name__ == "__main__":
    main()
