"""The sandbox's filesystem view: a job's Python under /tmp (a CI checkout's virtualenv) is bound on top
of the private /tmp, not hidden by it."""

from __future__ import annotations

import sys

import pytest

from neocloud.scheduler.executor import sandbox


def test_a_python_under_tmp_is_bound_after_the_private_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/tmp/checkout/.venv")
    args = sandbox._system_binds()
    tmpfs = args.index("--tmpfs")
    assert args[tmpfs + 1] == "/tmp"
    bound = [i for i in range(len(args) - 2) if args[i] == "--ro-bind" and args[i + 1] == "/tmp/checkout/.venv"]
    assert bound and bound[0] > tmpfs


def test_the_pythons_parents_are_searchable_by_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """bubblewrap makes the directories above a bind 0700: the job's uid could not reach its own Python."""
    monkeypatch.setattr(sys, "prefix", "/srv/site/.venv")
    args = sandbox._system_binds()
    bind = next(i for i in range(len(args) - 2) if args[i] == "--ro-bind" and args[i + 1] == "/srv/site/.venv")
    for parent in ("/srv", "/srv/site"):
        made = args.index(parent)
        assert args[made - 3 : made] == ["--perms", "0755", "--dir"] and made < bind
