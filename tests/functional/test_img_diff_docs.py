"""The table of differences kept on purpose (docs/tools/strata-img.md) and
the differential cases agree: every row is what some case expects, every
case's key is a row, and no case is both documented and pending."""
import test_img_diff_chain
import test_img_diff_check_compare
import test_img_diff_convert
import test_img_diff_create
import test_img_diff_info
import test_img_diff_modify
from img_diff import documented_differences

MODULES = [test_img_diff_create, test_img_diff_info, test_img_diff_check_compare,
           test_img_diff_convert, test_img_diff_chain, test_img_diff_modify]


def all_cases():
    return [c for m in MODULES for c in m.CASES]


def test_every_documented_difference_has_a_case():
    rows = documented_differences("strata-img.md")
    assert rows, "no Differences table in docs/tools/strata-img.md"
    used = {c.doc[0] for c in all_cases() if c.doc}
    assert set(rows) == used, (f"rows without a case: {sorted(set(rows) - used)}; "
                               f"keys without a row: {sorted(used - set(rows))}")


def test_documented_and_pending_apart():
    for c in all_cases():
        assert not (c.doc and c.pending), c.id


def test_pending_names_known_branches():
    branches = {"img-safety", "formats", "qcow2-features", "cor-backing", "hardening"}
    for c in all_cases():
        if c.pending:
            assert c.pending[0] in branches, (c.id, c.pending)
