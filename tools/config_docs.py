"""Regenerate the configuration declarations from ``components/config.py`` KEYS.

``python -m tools.config_docs`` rewrites the ``config:`` block of Pulumi.yaml and the configuration
table of README.md, so the three never drift; ``tests/test_config.py`` fails when they do.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from components.config import KEYS, Key

ROOT = Path(__file__).resolve().parent.parent
TABLE_HEADER = "| key | type | default | description |\n|---|---|---|---|\n"


def pulumi_schema(key: Key) -> dict:
    schema: dict = {"type": key.type, "description": key.description}
    if key.type == "array":
        schema["items"] = {"type": "string"}
    if key.default is not None:
        schema["default"] = key.default
    return schema


def readme_default(key: Key) -> str:
    if key.default is None:
        return "(required)"
    if isinstance(key.default, bool):
        return f"`{str(key.default).lower()}`"
    if isinstance(key.default, int):
        return f"`{key.default}`"
    return "`" + repr(key.default).replace("'", '"') + "`"


def readme_table() -> str:
    rows = [f"| `{key.name}` | {key.type} | {readme_default(key)} | {key.description} |" for key in KEYS]
    return TABLE_HEADER + "\n".join(rows) + "\n"


def main() -> None:
    project_file = ROOT / "Pulumi.yaml"
    text = project_file.read_text()
    head = text[: text.index("\nconfig:\n") + 1]
    config_block = yaml.safe_dump(
        {"config": {key.name: pulumi_schema(key) for key in KEYS}}, sort_keys=False, width=120
    )
    project_file.write_text(head + config_block)

    readme = ROOT / "README.md"
    text = readme.read_text()
    text = re.sub(re.escape(TABLE_HEADER) + r"(\|.*\|\n)+", lambda _: readme_table(), text, count=1)
    readme.write_text(text)


if __name__ == "__main__":
    main()
