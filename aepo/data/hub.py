"""Problems from a Hugging Face dataset, named ``hf:OWNER/NAME[:CONFIG][@SPLIT]``.

``hf:BytedTsinghua-SIA/DAPO-Math-17k`` (its only split), ``hf:HuggingFaceH4/MATH-500@test``,
``hf:EleutherAI/hendrycks_math:algebra@test`` (config ``algebra``, split ``test``). The dataset is
loaded with :func:`datasets.load_dataset`, which resolves the id as it always does: a folder of
that name in the working directory, then the hub, then (offline, ``HF_HUB_OFFLINE=1``) the
copy an earlier download left in the ``datasets`` cache. Its rows then go through the same
normalisation as the rows of a file (:func:`aepo.data.problems.problems_from_rows`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from aepo.data.problems import LoadedProblems, problems_from_rows
from aepo.data.rows import RawRow

HUB_PREFIX = "hf:"
SYNTAX = "hf:OWNER/NAME[:CONFIG][@SPLIT]"
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class HubDatasetError(ValueError):
    """A hub id that is malformed, cannot be loaded, or names no single split."""


@dataclass(frozen=True)
class HubDatasetId:
    repo: str
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        config = f":{self.config}" if self.config else ""
        split = f"@{self.split}" if self.split else ""
        return f"{HUB_PREFIX}{self.repo}{config}{split}"

    @property
    def name(self) -> str:
        """The dataset's own name, the default ``data_source`` of its rows."""
        return self.repo.split("/")[-1]


def is_hub_id(text: str) -> bool:
    return str(text).startswith(HUB_PREFIX)


def parse_hub_id(text: str) -> HubDatasetId:
    """``hf:OWNER/NAME[:CONFIG][@SPLIT]`` into its parts; HubDatasetError names what is wrong."""
    body = text[len(HUB_PREFIX) :]
    rest, at, split = body.partition("@")
    repo, colon, config = rest.partition(":")
    if not _REPO.fullmatch(repo) or (colon and not config) or (at and not split):
        raise HubDatasetError(f"{text!r} is not a Hugging Face dataset id: use {SYNTAX}")
    return HubDatasetId(repo, config or None, split or None)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def hub_rows(dataset_id: HubDatasetId) -> Iterator[RawRow]:
    """Every row of the dataset's split, numbered from 1 in the split's order."""
    import datasets

    try:
        loaded = datasets.load_dataset(dataset_id.repo, dataset_id.config, split=dataset_id.split)
    except ConnectionError as error:  # what datasets raises offline and without a network
        raise HubDatasetError(
            f"{dataset_id}: cannot reach the Hugging Face hub and no copy is in the local "
            f"datasets cache ({_one_line(error)}); download it where there is a network, or "
            "pass a local JSONL/parquet file instead (aepo data prepare path/to/file.parquet)"
        ) from None
    except Exception as error:  # unknown repo, config or split: datasets' own words
        raise HubDatasetError(f"{dataset_id}: {_one_line(error)} (syntax: {SYNTAX})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise HubDatasetError(
                f"{dataset_id} has splits {', '.join(loaded)}: name one, e.g. "
                f"{HubDatasetId(dataset_id.repo, dataset_id.config, next(iter(loaded)))}"
            )
        loaded = next(iter(loaded.values()))
    for row, record in enumerate(loaded, start=1):
        yield RawRow(row, dict(record))


def load_hub_problems(
    dataset_id: HubDatasetId,
    *,
    source: str | None = None,
    problem_key: str = "problem",
    answer_key: str = "answer",
    answer_format: str = "plain",
) -> LoadedProblems:
    """The problems of a hub dataset and its unreadable rows, each named ``hf:...: row N``."""
    return problems_from_rows(
        hub_rows(dataset_id),
        str(dataset_id),
        source=source or dataset_id.name,
        problem_key=problem_key,
        answer_key=answer_key,
        answer_format=answer_format,
    )
