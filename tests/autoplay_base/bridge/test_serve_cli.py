"""``autoplay-live serve``: secrets from named environment variables, refusals exit 2;
the OpenTelemetry hook; the ``serve`` extra named when Starlette is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from autoplay_base.bridge import build_app
from autoplay_base.bridge.otel import OTelMetricsHook
from autoplay_base.cli import bridge_app, build_parser, main
from autoplay_base.errors import ConfigError
from tests.autoplay_base.bridge.conftest import ADMIN, API, SECRET


def test_serve_reads_secrets_from_the_named_variables() -> None:
    args = build_parser().parse_args(
        ["serve", "--api-token-env", "MY_API", "--admin-token-env", "MY_ADMIN"]
    )
    assert (args.host, args.port, args.webhook_secret_env) == (
        "127.0.0.1",
        8080,
        "AUTOPLAY_BRIDGE_WEBHOOK_SECRET",
    )
    app = bridge_app(
        args,
        {"MY_API": API, "MY_ADMIN": ADMIN, "AUTOPLAY_BRIDGE_WEBHOOK_SECRET": SECRET},
    )
    bridge = app.state.bridge
    assert bridge.api_token.reveal() == API and bridge.admin_token.reveal() == ADMIN
    assert bridge.verifier is not None and bridge.client is None
    with pytest.raises(ConfigError, match="needs api_token="):
        bridge_app(args, {"AUTOPLAY_BRIDGE_WEBHOOK_SECRET": SECRET})


def test_serve_exits_2_with_one_line_when_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--api-token-env", "AUTOPLAY_TEST_UNSET_VARIABLE_X"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("autoplay-live serve: build_app needs api_token=")


def test_serve_help_is_plain_text() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    assert "--webhook-secret-env" in text and "``" not in text and ":func:" not in text


def test_the_otel_hook_exports_the_same_counters() -> None:
    reader = InMemoryMetricReader()
    hook = OTelMetricsHook(MeterProvider(metric_readers=[reader]).get_meter("test"))
    app = build_app(api_token=API, webhook_secret=SECRET, metrics_hooks=[hook])
    bridge = app.state.bridge
    bridge.verifier.counters.accepted += 3
    hook.record_counter("replies", 1)
    hook.record_queue_depth("stream", 4)
    hook.record_queue_depth("stream", 1)
    data = reader.get_metrics_data()
    points: dict[tuple[str, str], float] = {}
    kinds: dict[str, str] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kinds[metric.name] = type(metric.data).__name__
                for point in metric.data.data_points:
                    label = next(iter(point.attributes.values()), "")
                    points[(metric.name, str(label))] = point.value  # type: ignore[union-attr]
    assert points[("autoplay.webhook", "accepted")] == 3
    assert points[("autoplay.bridge.events", "replies")] == 1
    assert points[("autoplay.bridge.queue_depth", "stream")] == 1
    assert points[("autoplay.store", "actions_stored")] == 0
    # Figures that also go down are gauges, as /metrics types them, never a counter.
    assert ("autoplay.store", "bytes") not in points
    assert points[("autoplay.store.current", "bytes")] == 0
    assert points[("autoplay.bridge.current", "stream_connected")] == 0
    assert (kinds["autoplay.store"], kinds["autoplay.store.current"]) == ("Sum", "Gauge")


def test_a_missing_serve_extra_names_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None\n"
        "try:\n"
        "    import autoplay_base.bridge\n"
        "except ImportError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("MissingDependencyError ")
    assert "pip install 'autoplay-live-context[serve]'" in done.stdout
