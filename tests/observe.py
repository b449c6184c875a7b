"""Look at a running gateway from the outside: its worker's memory and TCP sockets (/proc)."""

from __future__ import annotations

from pathlib import Path

# /proc/net/tcp socket states
LISTEN = "0A"


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def tcp_sockets(pid: int) -> list[tuple[int, int, str]]:
    """(local port, remote port, state) of every TCP socket the process holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                found.append((local, remote, fields[3]))
    return found


def upstream_sockets(pid: int, upstream_port: int) -> int:
    return sum(1 for _, remote, _ in tcp_sockets(pid) if remote == upstream_port)


def client_sockets(pid: int, own_port: int) -> int:
    return sum(1 for local, _, s in tcp_sockets(pid) if local == own_port and s != LISTEN)
