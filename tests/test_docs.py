"""The repository's own docs carry the contract: every field, topic and variable is in
docs/contract.md, and the README links only to files inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from minerwatch.shared import config, fields, topics

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def test_the_contract_names_every_sample_field_topic_and_variable() -> None:
    missing = [f.name for f in fields.SAMPLE_FIELDS if f"`{f.name}`" not in CONTRACT]
    missing += [spec.template for spec in topics.TOPICS
                if spec.template.replace("{base}", "minerwatch") not in CONTRACT
                and spec.template not in CONTRACT]
    missing += [name for name in config._ENV if name not in CONTRACT]
    assert not missing, f"docs/contract.md lacks {missing}"


def test_markdown_links_stay_inside_the_repository_and_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            resolved = (page.parent / target).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
    assert "../shared" not in (ROOT / "README.md").read_text()
