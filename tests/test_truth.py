"""SynthRef's sentences checked against their pictures by risclip.data.truth, which shares no code with the
generator: every sentence of version 2 is true; version 1's are not (what the check was built to find)."""

from __future__ import annotations

import pytest

from risclip.data import truth as T
from risclip.data.synthref import SynthRefConfig, generate

# the current SynthRef preset's generator settings (128 px, refcoco profile), fewer images
TRUTH_IMAGES = 500


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = {}
    for version in (1, 2):
        root = tmp_path_factory.mktemp(f"truth-v{version}")
        generate(root, SynthRefConfig(images=TRUTH_IMAGES, seed=0, size=128, sentences=version), progress=False)
        out[version] = root
    return out


def test_every_version_2_sentence_is_true(drawn):
    violations, counted = T.check(drawn[2])
    assert sum(counted.values()) > 1500 and set(counted) == {"attribute", "position", "relation"}
    assert violations == []


def test_version_1_sentences_break_the_size_and_relation_rules(drawn):
    violations, counted = T.check(drawn[1])
    rules = {v.rule for v in violations}
    assert {"size", "relation"} <= rules
    assert len({v.sent_id for v in violations}) > 0.05 * sum(counted.values())


def _obj(i, shape, area, x, y, colour="red"):
    return T.Seen(i, shape, area, (x, y), {c: (1.0 if c == colour else 0.0) for c in T.HUES})


def test_the_rules_on_hand_made_scenes():
    big, small, other = _obj(1, "square", 1400, 20, 60), _obj(2, "square", 900, 100, 60), _obj(3, "circle", 300, 60, 10)
    objs = [big, small, other]
    m = 7.68
    assert T.check_sentence("the large square", big, objs, m) == []
    assert [r for r, _ in T.check_sentence("the small square", big, objs, m)] == ["size", "unique"]
    assert [r for r, _ in T.check_sentence("the large circle", other, objs, m)] == ["size", "unique"]  # no other circle
    assert T.check_sentence("the square on the left", big, objs, m) == []
    assert T.check_sentence("the rightmost square", small, objs, m) == []
    assert [r for r, _ in T.check_sentence("the top square", big, objs, m)] == ["position"]  # level: no lead
    # relations: the named direction must dominate. The circle is 50 px above the big square and 40 px right of it
    assert T.check_sentence("the circle above the large square", other, objs, m) == []
    near = _obj(4, "circle", 300, 90, 40)  # 20 px above the big square, 70 px right of it: mostly right, not above
    assert [r for r, _ in T.check_sentence("the circle over the large square", near, [big, small, near], m)] == ["relation"]
    assert [r for r, _ in T.check_sentence("the blue square", big, objs, m)] == ["colour", "unique"]
    assert T.check_sentence("a square somewhere", big, objs, m) == [("grammar", "no known form")]


def test_cli_reports_violations_and_exits_1(drawn, capsys):
    assert T.main([str(drawn[2]), "--limit", "50", "--no-progress"]) == 0
    assert "0 of" in capsys.readouterr().out
    assert T.main([str(drawn[1]), "--no-progress"]) == 1
    assert "rule size" in capsys.readouterr().out


def test_the_truth_test_imports_nothing_of_the_generator():
    """Independence is the point: the check reads the written files with its own grammar and rules."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(T.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {"." * n.level + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and not [m for m in imported if m.startswith(("risclip", "."))]
