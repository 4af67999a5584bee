"""The TensorBoard dashboard of an AEPO run: a custom-scalars layout written into its log dir.

TensorBoard draws every scalar in its own chart; what a user watches is the entropy against
its target, and the reward against what AEPO spends and whether its guard has stepped in. Both
engines write this layout at start (the local engine into ``<run>/tensorboard``, the verl
engine into the directory verl's own TensorBoard logger writes to), and TensorBoard's Custom
Scalars tab shows it. A tag the run does not write (``aepo/entropy`` in a GRPO run) leaves its
line empty.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

CATEGORY = "AEPO"
ENTROPY_CHART = "entropy and its target (band: the demo's tracking tolerance)"
REWARD_CHART = "reward, extra generation and the guard"
SAMPLES_CHART = "REINFORCE samples per step"

TARGET_BAND = ("aepo/target_entropy", "aepo/target_low", "aepo/target_high")
"""a margin series: the target as its line, the tolerance as its band"""
ENTROPY_LINES = ("aepo/entropy", "actor/entropy")
"""the entropy the controller acted on, and the one the engine reports (pi_old's in the local
engine, verl's update's in verl)"""
REWARD_LINES = ("reward/mean", "aepo/extra_gen_fraction", "aepo/guard", "aepo/revival_coef")
"""all four live on [0, 1]: the mean reward of the GRPO samples, extra generated tokens per
GRPO token, 1 on steps where the guard stopped AEPO's downward push, and the entropy bonus it
gave a policy without positives"""
SAMPLES_LINES = ("aepo/reinforce_samples",)
"""a count, on an axis of its own"""


def layout():
    """The layout as TensorBoard's own ``layout_pb2.Layout``."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    def margin(value: str, lower: str, upper: str):
        return layout_pb2.MarginChartContent.Series(value=value, lower=lower, upper=upper)

    def multiline(title: str, tags: tuple[str, ...]):
        # multiline tags are regular expressions; anchored, each names exactly one tag
        regexes = [f"^{re.escape(tag)}$" for tag in tags]
        return layout_pb2.Chart(
            title=title, multiline=layout_pb2.MultilineChartContent(tag=regexes)
        )

    # a line without a band is a margin series whose bounds are the line itself
    entropy = layout_pb2.Chart(
        title=ENTROPY_CHART,
        margin=layout_pb2.MarginChartContent(
            series=[margin(*TARGET_BAND), *(margin(tag, tag, tag) for tag in ENTROPY_LINES)]
        ),
    )
    charts = [
        entropy,
        multiline(REWARD_CHART, REWARD_LINES),
        multiline(SAMPLES_CHART, SAMPLES_LINES),
    ]
    return layout_pb2.Layout(category=[layout_pb2.Category(title=CATEGORY, chart=charts)])


def layout_tags() -> set[str]:
    """Every tag the layout names."""
    return {*TARGET_BAND, *ENTROPY_LINES, *REWARD_LINES, *SAMPLES_LINES}


LAYOUT_FILE = "events.out.tfevents.0000000000.aepo_layout"
"""the layout's event file: TensorBoard reads a directory's event files in name order and then
polls only the last one, and writers name theirs by creation time, so a zero time keeps the
scalars' file last whenever the layout is written"""


def write_layout(log_dir: str | Path) -> Path:
    """Write the layout into ``log_dir`` as :data:`LAYOUT_FILE` (TensorBoard reads every event
    file of a directory as one run; writing again replaces it); returns the file."""
    import shutil
    import tempfile

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    tensor = TensorProto(
        dtype="DT_STRING",
        string_val=[layout().SerializeToString()],
        tensor_shape=TensorShapeProto(),
    )
    value = summary_pb2.Summary.Value(
        tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=metadata.create_summary_metadata()
    )
    event = event_pb2.Event(
        wall_time=time.time(), step=0, summary=summary_pb2.Summary(value=[value])
    )
    # The writer picks its own file name; written elsewhere, the file is moved in under ours.
    with tempfile.TemporaryDirectory() as scratch:
        writer = EventFileWriter(scratch)
        writer.add_event(event)
        writer.close()
        (written,) = Path(scratch).iterdir()
        target = log_dir / LAYOUT_FILE
        shutil.move(str(written), str(target))
    return target


def write_verl_layout(config) -> Path | None:
    """The layout, into the directory verl's TensorBoard logger writes to; returns the file
    (None when ``trainer.logger`` has no tensorboard)."""
    from aepo.backends.verl.dry_run import tensorboard_dir

    folder = tensorboard_dir(config)
    return None if folder is None else write_layout(folder)
