import re
from pathlib import Path

from golden.isa import VectorFunct, field_tables_markdown
from sw.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def test_isa_field_tables_match_the_code():
    text = (ROOT / "docs" / "isa.md").read_text()
    match = re.search(r"<!-- BEGIN FIELD TABLES[^\n]*-->\n(.*)<!-- END FIELD TABLES -->", text, re.S)
    assert match, "docs/isa.md lost its generated field tables"
    assert match.group(1) == field_tables_markdown(), \
        "docs/isa.md is stale: regenerate the field tables from golden/isa.py"


def test_isa_doc_describes_every_vector_funct():
    text = (ROOT / "docs" / "isa.md").read_text()
    for funct in VectorFunct:
        assert f"`{funct.name}` {int(funct)}" in text


def test_readme_shows_the_two_commands_and_every_cli_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    commands = build_parser()._subparsers._group_actions[0].choices
    for name in commands:
        assert f"npu {name}" in readme, f"README does not document `npu {name}`"


def test_readme_python_example_runs():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
