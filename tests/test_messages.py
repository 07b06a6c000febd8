"""Messages that used to mislead: each says what the user wrote, where, and what to write instead."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config.errors import ConfigError
from synth import PROJECT_DIR, pipeline
from synth.stackfile import load_yaml_file


def _project(tmp_path: Path, stack: str, text: str) -> Path:
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(text)
    return tmp_path


def test_an_unquoted_version_is_offered_back_as_the_user_wrote_it(tmp_path: Path):
    text = (PROJECT_DIR / "Pulumi.dev.yaml").read_text().replace("    cloud: aws\n",
                                                                  "    cloud: aws\n    kubernetesVersion: 1.30\n", 1)
    with pytest.raises(ConfigError) as raised:
        pipeline.run("dev", project_dir=_project(tmp_path, "dev", text), render=False)
    assert str(raised.value) == ("Pulumi.dev.yaml: mlplatform:cluster.kubernetesVersion: expected text, got 1.30, "
                                 "which YAML reads as the number 1.3; quote it as you mean it: "
                                 'kubernetesVersion: "1.30".')


@pytest.mark.parametrize("text, message", [
    ("config:\n  mlplatform:cluster:\n    cloud: kind\n   name: x\n",
     "line 4: its indentation matches none of the keys above it"),
    ("config:\n  mlplatform:cluster:\n    cloud kind\n    name: x\n",
     "line 4: a ':' that YAML cannot read here: this line or the one before lacks the ':' after its key"),
    ("config:\n  mlplatform:cluster:\n\tcloud: kind\n",
     "line 3: a character that cannot begin a value (a tab? YAML indents with spaces only)"),
    ("config:\n  mlplatform:teams: {a: 1\n  mlplatform:x: 1\n",
     "the mapping opened with '{' at line 2 is not closed: add the '}'"),
    ('config:\n  mlplatform:cluster:\n    name: "abc\n    cloud: kind\n',
     "the quote opened at line 3 is never closed"),
    ("config:\n  mlplatform:cluster:\n    cloud: kind\n    - name: x\n",
     "line 4: a list item ('- ...') where the mapping that starts at line 3 expects a key"),
])
def test_yaml_syntax_errors_are_said_in_plain_words_at_the_line_to_fix(tmp_path: Path, text: str, message: str):
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_yaml_file(path)
    assert str(raised.value) == f"Pulumi.bad.yaml: not valid YAML: {message}" + str(raised.value).split(message)[1]
    assert "while parsing" not in str(raised.value) and "while scanning" not in str(raised.value)


def test_a_missing_chart_dependency_is_a_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from synth import render

    upstream = PROJECT_DIR.parent / "shared" / "upstream" / "charts" / "kube-prometheus-stack-88.5.3"
    if not upstream.is_dir():
        pytest.skip(f"needs {upstream} (../shared): absent")
    charts = tmp_path / "charts"
    shutil.copytree(upstream, charts / upstream.name, ignore=shutil.ignore_patterns("grafana"))
    monkeypatch.setenv(render.CHARTS_ENV, str(charts))
    monkeypatch.setattr(render, "UPSTREAM_DIR", tmp_path / "none")
    monkeypatch.setattr(render, "PULL_CACHE", tmp_path / "cache")
    render.clear_caches()
    try:
        with pytest.raises(render.ChartUnavailable) as raised:
            render._load("kube-prometheus-stack", "88.5.3", None)
    finally:
        render.clear_caches()
    assert str(raised.value).startswith("chart grafana ")
    assert ", which chart kube-prometheus-stack 88.5.3 depends on, is in none of " in str(raised.value)
