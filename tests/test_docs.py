import re

from aepo.core import ALGORITHMS, AEPOConfig
from aepo.core.config_docs import _fields
from tests.conftest import PROJECT_ROOT


def test_readme_documents_every_aepo_key_and_algorithm():
    readme = (PROJECT_ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1]
    documented = set(re.findall(r"`([a-z_.]+):?`", table))
    missing = {key for key, *_ in _fields(AEPOConfig)} - documented
    assert not missing, f"README's configuration table lacks {sorted(missing)}"
    for algo in ALGORITHMS:
        assert f"| `{algo}` |" in readme


def test_the_generated_table_is_one_row_per_line():
    """A docstring that wraps must not break a row of the configuration table in two."""
    from aepo.core.config_docs import readme_table

    header, rule, *rows = readme_table().split("\n")
    assert rule == "|---|---|---|"
    assert all(line.startswith("| `") and line.endswith(" |") for line in [header, *rows][1:])


def test_the_readme_fits_a_new_user():
    assert len((PROJECT_ROOT / "README.md").read_text().splitlines()) < 250
