"""Read a run's TensorBoard directory the way TensorBoard's server does: its multiplexer, its
data provider and the Custom Scalars plugin's own ``layout_impl`` (what the tab requests)."""

from __future__ import annotations

import json
import re
from pathlib import Path


def read_dashboard(logdir: str | Path) -> tuple[dict, set[str]]:
    """(the custom-scalars layout as the plugin serves it, JSON; every scalar tag written)."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin
    from tensorboard.plugins.scalar import metadata as scalar_metadata

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    plugin = CustomScalarsPlugin(
        base_plugin.TBContext(
            logdir=str(logdir),
            data_provider=provider,
            multiplexer=multiplexer,
            plugin_name_to_instance={},
        )
    )
    ctx = context.RequestContext()
    layout = json.loads(plugin.layout_impl(ctx, "") or "{}")
    scalars = provider.list_scalars(ctx, experiment_id="", plugin_name=scalar_metadata.PLUGIN_NAME)
    return layout, {tag for tags in scalars.values() for tag in tags}


def unwritten_tags(layout: dict, written: set[str]) -> set[str]:
    """The layout's tags (margin series' tags, multiline regexes) that match no written tag."""
    missing = set()
    for category in layout["category"]:
        for chart in category["chart"]:
            for series in chart.get("margin", {}).get("series", []):
                missing |= {series[key] for key in ("value", "lower", "upper")} - written
            for regex in chart.get("multiline", {}).get("tag", []):
                if not any(re.fullmatch(regex, tag) for tag in written):
                    missing.add(regex)
    return missing
