"""The alert rules load in Prometheus, fire above their thresholds and stay quiet below, as the
real promtool checks them; and they query only what carbonspan exports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carbonspan.dashboards import promql

DASHBOARDS = Path(promql.__file__).parent
RULES = DASHBOARDS / "alerts.yaml"
RULE_TESTS = DASHBOARDS / "alerts.test.yaml"


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not on PATH; scripts/test.sh installs it (Debian package prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.mark.prometheus
def test_promtool_check_rules_accepts_every_rule(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


@pytest.mark.prometheus
def test_promtool_rule_unit_tests_pass(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# Each edit moves one threshold just past a synthetic series of alerts.test.yaml, so that a case
# that fired goes quiet or a case that stayed quiet fires: the unit tests must then fail, which
# shows they pin the thresholds rather than pass whatever the rules say.
THRESHOLD_EDITS = {
    "p95 above 1.475 g: the heavy route goes quiet": ("          ) > 1\n", "          ) > 1.5\n"),
    "p95 below 0.975 g: the light route fires": ("          ) > 1\n", "          ) > 0.9\n"),
    "idle share above 55%: the H100 goes quiet": ("          > 0.5\n", "          > 0.6\n"),
    "idle share below 45%: the A100 fires": ("          > 0.5\n", "          > 0.4\n"),
    "sample age above 600 s: stale GPUs go quiet": ("          ) > 120\n", "          ) > 700\n"),
    "sample age below 90 s: the fresh L40S fires": ("          ) > 120\n", "          ) > 60\n"),
    "absent for longer than the test waits": ("        for: 10m\n", "        for: 20m\n"),
    "live sources count as fallback": (
        'carbon_intensity_fallback="true"}\n',
        'carbon_intensity_fallback="false"}\n',
    ),
}


@pytest.mark.prometheus
@pytest.mark.parametrize("edit", THRESHOLD_EDITS.values(), ids=THRESHOLD_EDITS.keys())
def test_rule_unit_tests_fail_when_a_threshold_moves(
    promtool: str, tmp_path: Path, edit: tuple[str, str]
) -> None:
    old, new = edit
    text = RULES.read_text()
    assert text.count(old) == 1, f"{old!r} should occur once in {RULES.name}"
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = run_promtool(promtool, "test", "rules", tmp_path / RULE_TESTS.name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in rules():
        expectations = [case["exp_alerts"] for case in cases if case["alertname"] == rule["alert"]]
        assert any(expectations), f"{rule['alert']} never expected to fire"
        assert [] in expectations, f"{rule['alert']} never expected to stay quiet"


def test_every_alert_documents_its_threshold() -> None:
    for rule in rules():
        annotations = rule["annotations"]
        assert annotations.get("threshold"), rule["alert"]
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]


def test_alert_expressions_query_only_exported_metrics_and_labels() -> None:
    for rule in rules():
        assert promql.problems(rule["expr"]) == [], rule["alert"]
