import subprocess
import sys


def test_importing_aepo_core_needs_no_framework():
    code = (
        "import sys, aepo, aepo.core, aepo.cli\n"
        "heavy = [m for m in ('verl', 'vllm', 'flash_attn', 'transformers', 'ray') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_cli_help_lists_every_command():
    from aepo.cli import COMMANDS, main

    assert main(["--help"]) == 0
    assert main(["no-such-command"]) == 2
    assert {"demo", "train", "eval", "data", "plot"} <= set(COMMANDS)
