"""Resumable training runs: one folder per run with the last checkpoint and a JSON-lines log.

A run folder contains ``checkpoint.pt`` (model, optimizer, step, random states), written
atomically so a process killed mid-write leaves the previous checkpoint intact, and
``log.jsonl`` with one record per logged step or evaluation. Restarting a training command
on the same folder continues from the checkpoint.
"""

import json
import logging
import os
import random
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


class RunFolder:
    """The files of one training run."""

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder).expanduser()
        self.folder.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def log(self, record: dict) -> None:
        """Append one record (a JSON object) to the run's log, with the wall-clock time."""
        record = {"time": round(time.time(), 1), **record}
        with open(self.folder / LOG_NAME, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def save(self, state: dict) -> None:
        """Write the checkpoint through a temporary file and an atomic rename."""
        state = {**state, "python_random": random.getstate(), "torch_random": torch.get_rng_state()}
        partial = self.checkpoint_path.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint_path)
        logger.info("saved checkpoint at step %d to %s", state.get("step", -1), self.checkpoint_path)

    def load(self) -> dict | None:
        """Return the last checkpoint and restore the random states, or None for a new run."""
        if not self.checkpoint_path.exists():
            return None
        state = torch.load(self.checkpoint_path, weights_only=False)
        random.setstate(state["python_random"])
        torch.set_rng_state(state["torch_random"])
        logger.info("resuming from step %d of %s", state.get("step", -1), self.checkpoint_path)
        return state

    def records(self) -> list[dict]:
        """Return all records of the log, oldest first."""
        path = self.folder / LOG_NAME
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
