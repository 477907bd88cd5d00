"""testkit.process_stack.free_port: the ports the suite's services listen on."""

from __future__ import annotations

import socket

from testkit import process_stack
from testkit.process_stack import HOST, free_port


def test_ports_are_distinct_bindable_and_below_the_range_outgoing_connections_use() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < process_stack._PORTS_BELOW for p in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind((HOST, port))


def test_a_port_another_process_holds_is_skipped() -> None:
    with socket.socket() as held:
        held.bind((HOST, free_port() + 1))  # the port the next call would hand out
        held.listen()
        assert free_port() != held.getsockname()[1]


def test_the_range_comes_from_the_kernel_setting_else_linux_s_default(tmp_path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t60999\n")
    assert process_stack._ephemeral_low(setting) == 40000
    assert process_stack._ephemeral_low(tmp_path / "absent") == 32768
