"""`transaction`: all-or-nothing, with rollback checked through queries and
qemu-img."""
import os

from conftest import raw_image, require, run
from test_qmp_block import add_raw, nodes, qcow2_image


def test_empty_and_abort(daemon):
    c = daemon.client()
    assert c.execute("transaction", actions=[]) == {}
    assert c.error("transaction", {"actions": [{"type": "abort", "data": {}}]}) == (
        "GenericError", "Transaction aborted using Abort action")
    assert c.error("transaction", {"actions": [{"type": "abort"}]}) == (
        "GenericError", "Parameter 'actions[0].data' is missing")
    assert c.error("transaction", {"actions": [{"type": "abort", "data": {}}],
                                   "properties": {"completion-mode": "bad"}}) == (
        "GenericError", "Parameter 'completion-mode' does not accept value 'bad'")
    assert c.error("transaction", {"actions": [{"type": "blockdev-snapshot",
                                                "data": {"node": "a", "overlay": "b"}}],
                                   "properties": {"completion-mode": "grouped"}}) == (
        "GenericError",
        "Action 'blockdev-snapshot' does not support Transaction property "
        "completion-mode = grouped")


def test_two_snapshots_commit_together(daemon, workdir):
    base_a = raw_image(workdir, "a.raw")
    base_b = raw_image(workdir, "b.raw")
    ov_a = qcow2_image(workdir, "a.qcow2", backing=base_a, backing_fmt="raw")
    snap_b = os.path.join(str(workdir), "b-snap.qcow2")
    c = daemon.client()
    add_raw(c, base_a, "ra", "fa")
    add_raw(c, base_b, "rb", "fb")
    c.execute("blockdev-add", driver="qcow2", **{"node-name": "ova", "backing": None,
                                                 "file": {"driver": "file", "filename": ov_a}})
    c.execute("transaction", actions=[
        {"type": "blockdev-snapshot", "data": {"node": "ra", "overlay": "ova"}},
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": "rb", "snapshot-file": snap_b, "snapshot-node-name": "ovb"}},
    ])
    info = nodes(c)
    assert info["ova"]["backing_file_depth"] == 1
    assert info["ra"]["ro"] is True and info["rb"]["ro"] is True
    run(["qemu-img", "check", "-U", snap_b])


def test_failure_in_last_action_leaves_nothing_behind(daemon, workdir):
    require("qemu-img")
    base_a = raw_image(workdir, "a.raw")
    ov_a = qcow2_image(workdir, "a.qcow2", backing=base_a, backing_fmt="raw")
    base_b = raw_image(workdir, "b.raw")
    ov_b = qcow2_image(workdir, "b.qcow2", backing=base_b, backing_fmt="raw")
    c = daemon.client()
    add_raw(c, base_a, "ra", "fa")
    add_raw(c, base_b, "rb", "fb")
    for name, path in (("ova", ov_a), ("ovb", ov_b)):
        c.execute("blockdev-add", driver="qcow2", **{"node-name": name, "backing": None,
                                                     "file": {"driver": "file",
                                                              "filename": path}})
    before = nodes(c)
    assert c.error("transaction", {"actions": [
        {"type": "blockdev-snapshot", "data": {"node": "ra", "overlay": "ova"}},
        {"type": "blockdev-snapshot", "data": {"node": "rb", "overlay": "ovb"}},
        {"type": "blockdev-snapshot", "data": {"node": "nosuch", "overlay": "ovb"}},
    ]}) == ("GenericError", "Cannot find device='nosuch' nor node-name='nosuch'")
    after = nodes(c)
    assert after == before
    for name in ("ova", "ovb"):
        assert after[name]["backing_file_depth"] == 0
        assert not any(ch["child"] == "backing" for ch in after[name]["children"])
    assert after["ra"]["ro"] is False and after["rb"]["ro"] is False
    # The rolled-back nodes are usable again: the same snapshot now succeeds.
    c.execute("transaction", actions=[
        {"type": "blockdev-snapshot", "data": {"node": "ra", "overlay": "ova"}}])
    assert nodes(c)["ova"]["backing_file_depth"] == 1


def test_abort_action_rolls_back_a_sync_snapshot(daemon, workdir):
    base = raw_image(workdir)
    snap = os.path.join(str(workdir), "snap.qcow2")
    c = daemon.client()
    add_raw(c, base)
    before = nodes(c)
    assert c.error("transaction", {"actions": [
        {"type": "blockdev-snapshot-sync",
         "data": {"node-name": "r0", "snapshot-file": snap, "snapshot-node-name": "s1"}},
        {"type": "abort", "data": {}},
    ]}) == ("GenericError", "Transaction aborted using Abort action")
    assert nodes(c) == before
    # A later action may use a node an earlier one created.
    c.execute("blockdev-add", driver="null-co", **{"node-name": "n0"})
    assert "s1" not in nodes(c)
