"""`hutch doctor` and the run on Podman without its init (catatonit): both
fail, with the same fix. Podman is faked at its command line (a script on
disk answering `version`, `info` and `image inspect`) and registered in the
engine registry in place of the real one; the host facts are given."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from hutch import engines
from hutch.cli import main
from hutch.engines.podman import INIT_FIX, Podman, PodmanHost, Rlimit
from hutch.errors import EXIT_ENGINE, EngineUnavailable

INFO = {
    "host": {"security": {"rootless": False}, "cgroupVersion": "v2", "idMappings": {}},
    "store": {"graphDriverName": "overlay", "configFile": "/etc/containers/storage.conf"},
}
HOST = PodmanHost(rootless=False, cgroup_v2=True, nofile=Rlimit(1024, 4096), nproc=Rlimit(4096, 4096),
                  init="/usr/libexec/podman/catatonit")  # fmt: skip


def fake_podman(tmp_path: Path) -> str:
    script = tmp_path / "podman"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  version) echo 4.3.1;;\n"
        f"  info) echo '{json.dumps(INFO)}';;\n"
        "  image) echo sha256:base;;\n"
        "  *) exit 1;;\n"
        "esac\n"
    )
    script.chmod(0o755)
    return str(script)


def use_podman(monkeypatch: pytest.MonkeyPatch, engine: Podman) -> None:
    monkeypatch.setitem(engines.ENGINES, "podman", lambda: engine)
    monkeypatch.setenv("HUTCH_ENGINE", "podman")


@pytest.mark.parametrize("init", [HOST.init, None], ids=["present", "missing"])
def test_doctor_fails_without_an_init_for_pid_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], init: str | None
) -> None:
    use_podman(monkeypatch, Podman(fake_podman(tmp_path), HOST._replace(init=init)))
    monkeypatch.chdir(tmp_path)
    status = main(["doctor"])
    out = capsys.readouterr().out.splitlines()
    if init is not None:  # the control: everything else passes
        assert status == 0, out
        assert f"[ok] init for PID 1 present ({init})" in out
    else:
        assert status == 1, out
        at = next(i for i, line in enumerate(out) if line.startswith("[FAIL] init for PID 1"))
        assert out[at + 1] == f"       fix: {INIT_FIX}"
        assert [line for line in out if line.startswith("[FAIL]")] == [out[at]]


def test_run_without_an_init_fails_with_the_doctors_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    podman = Podman(fake_podman(tmp_path), HOST._replace(init=None))
    use_podman(monkeypatch, podman)
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    state = tmp_path / "state"
    state.mkdir()
    (state / "hutch").mkdir()
    (state / "hutch" / "versions.json").write_text(
        json.dumps({"claude": {"version": "1.0.0", "checked": time.time()}})
    )
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    assert main(["exec", "--", "true"]) == EXIT_ENGINE
    assert capsys.readouterr().err.endswith(f"  hint: {INIT_FIX}\n")
    # The same words when Podman itself reports it.
    with pytest.raises(EngineUnavailable) as raised:
        podman.raise_if_unavailable("Error: container-init binary not found on the host")
    assert raised.value.hint == INIT_FIX
