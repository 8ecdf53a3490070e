"""File names as QEMU reads them (docs/tools/filenames.md), checked against
qemu-img on the same names: the messages for names QEMU refuses, json: and
file: names, and NBD URIs in every tool (strata-img, strata-io, strata-nbd
re-exporting another server's export, a qcow2 backing file).
"""
import json
import os
import subprocess
import time

import pytest

from conftest import require, run, strata_binary

MiB = 1 << 20

REFUSED = ["a:b", "NBD://h/e", "nbds://h/e", "nbd://h/e x", "nbd://h:99999/e", "nbd:///e",
           "nbd+unix:///e", "nbd+unix:///e?a=1", "nbd+unix://h/e?socket=/s", "nbd://h/e?socket=/s",
           "nbd:", "nbd:h", "nbd+unix:e?socket=/s", "nbd:unix:/s:exportname=", "null-co://x",
           "json:[1]", "json:{}", 'json:{"filename":"x"}']


@pytest.mark.parametrize("name", REFUSED)
def test_refused_names_give_qemu_img_messages(name):
    require("qemu-img")
    theirs = run(["qemu-img", "info", name], check=False)
    ours = run([strata_binary("strata-img"), "info", name], check=False)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.replace("strata-img:", "qemu-img:") == theirs.stderr


def test_json_and_file_names(workdir):
    image = os.path.join(str(workdir), "a:b.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", image, "1M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 64k", image])
    names = [f"file:{image}", f"json:{{\"driver\":\"qcow2\",\"file.filename\":\"{image}\"}}",
             json.dumps({"driver": "qcow2", "file": {"driver": "file", "filename": image}})]
    names[2] = "json:" + names[2]
    for name in names:
        ours = json.loads(run([strata_binary("strata-img"), "info", "--output=json", name]).stdout)
        theirs = json.loads(run(["qemu-img", "info", "--output=json", name]).stdout)
        assert ours["format"] == theirs["format"] == "qcow2"
        assert ours["virtual-size"] == theirs["virtual-size"]
        res = run([strata_binary("strata-io"), "-c", "r -P 0x61 0 64k", name])
        assert "read 65536/65536 bytes at offset 0" in res.stdout


def start_qemu_nbd(image, sock, name):
    proc = subprocess.Popen(["qemu-nbd", "-t", "-k", sock, "-x", name, "-f", "raw", image],
                            stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(sock):
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("qemu-nbd did not start")


def test_strata_nbd_reexports_an_nbd_uri_and_backing_files_follow_uris(workdir):
    """qemu-nbd serves a disk; strata-nbd serves that export again (its
    IMAGE is an NBD URI, export name with a space); an overlay whose backing
    file is the strata-nbd URI reads the disk through both servers."""
    for tool in ("qemu-nbd", "qemu-img", "qemu-io"):
        require(tool)
    d = str(workdir)
    disk = os.path.join(d, "disk.raw")
    run(["qemu-img", "create", "-q", "-f", "raw", disk, "8M"])
    run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 1M 64k", "-c", "write -P 0xa5 7M 4k", disk])
    first, second = os.path.join(d, "q.sock"), os.path.join(d, "s.sock")
    upstream = start_qemu_nbd(disk, first, "my disk")
    try:
        source = f"nbd+unix:///my%20disk?socket={first}"
        strata = subprocess.Popen([strata_binary("strata-nbd"), "-t", "-r", "-f", "raw", "-k",
                                   second, "-x", "again", source], stderr=subprocess.PIPE,
                                  text=True)
        try:
            for _ in range(200):
                if os.path.exists(second):
                    break
                time.sleep(0.02)
            again = f"nbd+unix:///again?socket={second}"
            run(["qemu-img", "compare", "-f", "raw", "-F", "raw", disk, again])
            top = os.path.join(d, "top.qcow2")
            run([strata_binary("strata-img"), "create", "-q", "-f", "qcow2", "-b", again, "-F",
                 "raw", top])
            info = json.loads(run(["qemu-img", "info", "--output=json", "-U", top]).stdout)
            assert info["full-backing-filename"] == again
            run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", disk, top])
            res = run([strata_binary("strata-io"), "-r", "-c", "r -P 0xa5 7M 4k", top])
            assert "read 4096/4096 bytes at offset 7340032" in res.stdout
            chain = run([strata_binary("strata-img"), "info", "--backing-chain", top]).stdout
            assert f"image: {again}" in chain
        finally:
            strata.terminate()
            strata.wait(timeout=20)
    finally:
        upstream.terminate()
        upstream.wait(timeout=20)
