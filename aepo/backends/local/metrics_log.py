"""Per-step scalars to TensorBoard and to a JSONL file (one object per step).

The JSONL log is what scripts and tests read; TensorBoard is what people look at (its Custom
Scalars tab shows ``aepo.tensorboard_layout``'s dashboard). On resume
the JSONL lines after the checkpoint's step are dropped, so the file describes exactly one
trajectory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from aepo.tensorboard_layout import write_layout

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

logger = logging.getLogger(__name__)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    def __init__(self, run_dir: str | Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [m for m in self._complete_lines() if m["step"] <= resume_step]
            self.path.write_text("".join(json.dumps(m) + "\n" for m in kept))
        # purge_step makes TensorBoard hide the events a crashed run wrote after the
        # checkpoint it is resumed from.
        purge = None if resume_step is None else resume_step + 1
        write_layout(self.run_dir / TENSORBOARD_DIR)
        self.writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=purge)

    def _complete_lines(self) -> list[dict]:
        # A run killed while appending leaves a last line cut short; it describes a step after
        # the checkpoint anyway, so it goes like the other lines after it.
        text = self.path.read_text() if self.path.is_file() else ""
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            logger.warning("%s: dropping a last line cut short: %.60s", self.path, lines.pop())
        return [json.loads(line) for line in lines if line.strip()]

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
