"""The README's two commands are the interface: CI must run exactly its test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_has_exactly_two_commands():
    cmds = _commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "jaxqc " in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_readme_main_command_uses_a_registered_data_set():
    from jaxqc.data.registry import NAMES

    main = _commands()[0]
    assert any(f" {name}" in main for name in NAMES)
