"""The .neocloudignore matcher: the .gitignore subset it promises."""

from __future__ import annotations

import pytest

from neocloud.domain.ignore import IgnoreRules


@pytest.mark.parametrize(
    ("rules", "path", "is_dir", "ignored"),
    [
        ("*.pyc", "a.pyc", False, True),
        ("*.pyc", "deep/down/a.pyc", False, True),
        ("*.pyc", "a.py", False, False),
        ("*.pyc", "dir.pyc/x", False, False),  # the dir itself would match; its content is the walker's
        ("a?c", "abc", False, True),
        ("a?c", "a/c", False, False),  # ? never matches /
        ("*", "x/y", False, True),
        ("data/*.bin", "data/a.bin", False, True),
        ("data/*.bin", "sub/data/a.bin", False, False),  # an inner / anchors
        ("/build", "build", True, True),
        ("/build", "src/build", True, False),  # a leading / anchors
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # trailing /: directories only
        ("build/", "x/build", True, True),
        ("**/cache", "a/b/cache", True, True),
        ("**/cache", "cache", True, True),
        ("logs/**", "logs/a/b.txt", False, True),
        ("logs/**", "logs", True, False),
        ("a/**/b", "a/b", False, True),
        ("a/**/b", "a/x/y/b", False, True),
        ("a/**/b", "c/a/x/b", False, False),
        ("[ab].txt", "b.txt", False, True),
        ("[!ab].txt", "b.txt", False, False),
        ("[!ab].txt", "c.txt", False, True),
        ("# comment\n\n*.log", "# comment", False, False),
        ("\\#keep", "#keep", False, True),
        ("*.log\n!keep.log", "keep.log", False, False),
        ("*.log\n!keep.log", "other.log", False, True),
        ("!keep.log\n*.log", "keep.log", False, True),  # the last match decides
        ("", "anything", False, False),
    ],
)
def test_rules(rules: str, path: str, is_dir: bool, ignored: bool) -> None:
    assert IgnoreRules(rules).ignored(path, is_dir) is ignored
