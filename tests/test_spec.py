"""The deployment spec: defaults in one place, validation, its file, and the server's settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nbdeploy.deployments import ray_client
from nbdeploy.errors import DeploymentError, InvalidInputError
from nbdeploy.spec import DEFAULT_WINDOWS, DEFAULTS, DeploymentSpec, ModelEntry, RaySpec, ServerSettings, parse_windows


def spec(**kw: object) -> DeploymentSpec:
    return DeploymentSpec(name="cancer", history=[ModelEntry(ref="cancer/1", model_path="/m", version=1)], **kw)  # type: ignore[arg-type]


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    s = spec(windows=parse_windows("30s,15m"), ray=RaySpec(replicas=2), target="ray", alerts=[{"rule": "p95_ms>5"}])
    s.save(tmp_path)
    assert DeploymentSpec.load(tmp_path) == s
    assert [p.name for p in tmp_path.iterdir()] == ["spec.json"]  # no temporary file left behind
    assert s.alert_window == "30s"


def test_older_files_and_unknown_keys_load(tmp_path: Path) -> None:
    doc = {"name": "cancer", "history": [{"ref": "cancer/1", "model_path": "/m", "at": 1.0}],
           "alert_window": "1m", "from_a_newer_version": True}  # fmt: skip
    (tmp_path / "spec.json").write_text(json.dumps(doc))
    loaded = DeploymentSpec.load(tmp_path)
    assert loaded.windows == DEFAULT_WINDOWS and loaded.max_batch == DEFAULTS.max_batch
    with pytest.warns(DeprecationWarning, match=r"read \.max_batch instead"):
        assert loaded["max_batch"] == DEFAULTS.max_batch


@pytest.mark.parametrize(
    "text",
    ["{", "[]", '{"name": "cancer", "history": [{"ref": 1}]}', '{"name": "cancer", "history": []}', "\x00\x01"],
)
def test_a_damaged_spec_is_one_sentence(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "cancer"
    folder.mkdir()
    (folder / "spec.json").write_text(text)
    with pytest.raises(DeploymentError, match=r"^The spec of deployment 'cancer' \(.*spec.json\) "):
        DeploymentSpec.load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": 70000}, "Invalid port 70000: use 1-65535, or 0 for a free port."),
        ({"max_batch": 0}, "Invalid max batch 0: a predict call takes at least 1 row."),
        ({"max_wait_ms": -1}, "Invalid max wait -1 ms: use 0 or more milliseconds."),
        ({"max_body_bytes": 0}, "Invalid body limit 0 bytes: use a positive size."),
        ({"alert_interval_s": 0}, "Invalid alert interval 0 s: use a positive number."),
        ({"target": "k8s"}, "Unknown target 'k8s': use local or ray."),
        ({"ray": RaySpec(replicas=0)}, "Invalid replica count 0: a Ray deployment needs at least 1 replica."),
        ({"ray": RaySpec(num_cpus=-1)}, "Invalid CPUs per replica -1: use 0 or more."),
    ],
)
def test_validation_names_the_value(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        spec(**change).validate()
    assert str(err.value) == message


def test_windows_parse_in_one_place() -> None:
    assert parse_windows("30s, 15m,1h") == {"30s": 30.0, "15m": 900.0, "1h": 3600.0}
    assert parse_windows(["1.5m"]) == {"1.5m": 90.0}
    for bad, message in [(",", "Give at least one monitoring window, for example 1m."),
                         ("5", "Invalid window '5': use a number followed by s, m or h, for example 5m."),
                         ("0s", "Invalid window '0s': a window lasts more than 0 seconds.")]:  # fmt: skip
        with pytest.raises(InvalidInputError) as err:
            parse_windows(bad)
        assert str(err.value) == message


def test_server_settings_come_from_the_spec(tmp_path: Path) -> None:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"columns": []}))
    s = spec(max_batch=64, windows=parse_windows("30s,2m"))
    s.history.append(ModelEntry(ref="cancer/2", model_path="/m2", version=2, task="classification",
                                profile_path=str(profile)))  # fmt: skip
    settings = s.server_settings(token="t", folder=tmp_path)
    assert isinstance(settings, ServerSettings)
    assert (settings.ref, settings.version, settings.max_batch, settings.alert_window) == ("cancer/2", 2, 64, "30s")
    assert settings.profile == {"columns": []} and settings.folder == str(tmp_path)
    replica = s.server_settings(token=None, folder=None, monitor=False, reload=False)
    assert replica.profile is None and not replica.monitor and not replica.reload
    # a server built without a spec (tests, tools) has the spec's defaults
    bare = ServerSettings(name="x", ref="x/1")
    assert (bare.max_batch, bare.max_wait_ms, bare.windows) == (DEFAULTS.max_batch, DEFAULTS.max_wait_ms,
                                                                  DEFAULT_WINDOWS)  # fmt: skip


def test_the_ray_controller_answers_structured_json(tmp_path: Path) -> None:
    spec().save(tmp_path)  # a local deployment: the controller refuses it in one sentence
    out = subprocess.run([sys.executable, "-m", ray_client.CTL, "delete", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "ok": False, "error": f"Deployment 'cancer' ({tmp_path}) is not a Ray deployment.",
    }  # fmt: skip
    with pytest.raises(DeploymentError) as err:
        ray_client.ctl(tmp_path, "delete", timeout=120)
    assert str(err.value) == f"Deployment 'cancer' ({tmp_path}) is not a Ray deployment."
    (tmp_path / "spec.json").write_text("{")
    with pytest.raises(DeploymentError, match=r"^The spec of deployment .* cannot be read"):
        ray_client.ctl(tmp_path, "delete", timeout=120)
