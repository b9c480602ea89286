"""docs/kamailio.md's radiusclient.conf, copied as printed, is one radcli reads.

radcli (1.2.11, Kamailio's misc_radius and acc_radius on Debian 12) takes a line's
whole rest as the option's value: a `# comment` after a value is part of it. The page
once printed `servers /etc/kamailio/radcli/servers  # "192.0.2.5 <secret>", mode 0600`:
an operator who copied it got rc_read_config failing, so Kamailio's radius modules
did not start. The test reads the page's block with the real libradcli (ctypes), the
paths pointed at files of the test.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "kamailio.md"
LIBRARY = ctypes.util.find_library("radcli")

pytestmark = pytest.mark.skipif(
    LIBRARY is None, reason="libradcli is not installed (Debian: libradcli4)"
)


def _documented_conf() -> str:
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", DOC.read_text(), re.S | re.M)
    confs = [b for b in blocks if b.startswith("# /etc/kamailio/radcli/radiusclient.conf")]
    assert len(confs) == 1, "docs/kamailio.md: the radiusclient.conf block not found"
    return confs[0]


def test_the_documented_radiusclient_conf_is_read_by_radcli(tmp_path: Path) -> None:
    servers = tmp_path / "servers"
    servers.write_text("127.0.0.1\ta-secret\n")
    servers.chmod(0o600)
    dictionary = tmp_path / "dictionary"
    dictionary.write_text((REPO / "config" / "kamailio" / "dictionary").read_text())
    text = (
        _documented_conf()
        .replace("/etc/kamailio/radcli/servers", str(servers))
        .replace("/etc/kamailio/radcli/dictionary", str(dictionary))
        .replace("192.0.2.5", "127.0.0.1")
        .replace("192.0.2.10", "127.0.0.1")
    )
    conf = tmp_path / "radiusclient.conf"
    conf.write_text(text)

    lib = ctypes.CDLL(LIBRARY)
    lib.rc_read_config.restype = ctypes.c_void_p
    lib.rc_read_config.argtypes = [ctypes.c_char_p]
    lib.rc_conf_str.restype = ctypes.c_char_p
    lib.rc_conf_str.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.rc_destroy.argtypes = [ctypes.c_void_p]
    handle = lib.rc_read_config(str(conf).encode())
    assert handle, f"radcli refused the radiusclient.conf of docs/kamailio.md:\n{text}"
    try:
        assert lib.rc_conf_str(handle, b"servers") == str(servers).encode()
        assert lib.rc_conf_str(handle, b"dictionary") == str(dictionary).encode()
    finally:
        lib.rc_destroy(handle)
