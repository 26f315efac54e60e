#!/usr/bin/env python3
"""Bytes per query between the tree's levels, and CPU per query per role,
measured from outside the processes so that it works for any binaries.

A tree started by `searchtree up` is observed from the kernel:
  - `ss -tinpeH` gives every TCP socket's owner process (`users:`), its cookie
    (`sk:`, unique while the socket lives) and tcp_info's `bytes_sent` /
    `bytes_received` (payload bytes: gRPC's HTTP/2 frames, headers and
    protobuf, as they cross the wire);
  - `/proc/PID/stat` gives each node's CPU time (utime + stime).
Which process is which node comes from `up`'s log (`node serving node=NAME
addr=ADDR [http=...] pid=PID`), or, for binaries that do not log it, from the
children of `up` (their command name gives the role) and their listening
sockets (`ss -tlnpH`).

Each connection is counted once, from its upper end: the root's accepted
sockets (root <-> its clients; the client whose pid is --bench-pid is the
load generator), the root's sockets to parents, the parents' sockets to
leaves. Down = requests (bytes the upper end sent; for the bench link, what
the root received), up = answers.

  socket_bytes.py watch --up-log LOG [--up-pid PID] --start EPOCH --at S [--at S ...] --out FILE
      sleeps until EPOCH + S for each S and takes a snapshot (sockets, nodes,
      CPU); run it beside the load so that the last snapshot is taken while
      the load generator's connections are still open.
  socket_bytes.py report --watch FILE --completed N --duration D [--bench-pid PID]
      bytes and CPU between the first and last snapshot, per query: N
      queries completed over the measured D seconds, scaled to the span
      between the two snapshots (a steady load). Prints JSON.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

SERVING = re.compile(r"node serving node=(\S+) addr=(\S+)(?: \S+=\S+)*? pid=(\d+)")
USERS = re.compile(r'users:\(\("([^"]*)",pid=(\d+)')
COOKIE = re.compile(r"\bsk:([0-9a-f]+)")
COUNTER = re.compile(r"\b(bytes_sent|bytes_received|bytes_acked):(\d+)")


def role_of(name):
    """`root`, `parent` or `leaf` from a node's name or command name
    (the kernel cuts command names to 15 characters: `searchtree-pare`)."""
    name = name.removeprefix("searchtree-")
    for role in ("root", "parent", "leaf"):
        if name.startswith(role[:4]):
            return role
    return None


def port_of(addr):
    return addr.rsplit(":", 1)[-1]


def run(args):
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def sockets():
    """Every TCP socket (not listening) with its owner and byte counters."""
    entries, current = [], None
    for line in run(["ss", "-tinpeH"]).splitlines():
        if line[:1].isspace():
            if current is not None:
                current += " " + line.strip()
            continue
        if current is not None:
            entries.append(current)
        current = line
    if current is not None:
        entries.append(current)
    result = []
    for entry in entries:
        fields = entry.split()
        if len(fields) < 5:
            continue
        users = USERS.search(entry)
        cookie = COOKIE.search(entry)
        counters = {k: int(v) for k, v in COUNTER.findall(entry)}
        local, peer = fields[3], fields[4]
        result.append({
            "key": cookie.group(1) if cookie else f"{local}>{peer}",
            "local": local,
            "peer": peer,
            "comm": users.group(1) if users else None,
            "pid": int(users.group(2)) if users else None,
            "sent": counters.get("bytes_sent", 0),
            "received": counters.get("bytes_received", 0),
        })
    return result


def children_of(ppid):
    """pid -> command name of the processes whose parent is ppid."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if int(stat[stat.rindex(")") + 2:].split()[1]) == ppid:
            out[int(entry)] = comm
    return out


def nodes(up_log, up_pid):
    """pid -> {name, role, port}: from up's log; else up's children and
    their listening sockets. A node restarted by `up` appears again with
    its new pid; the latest line wins."""
    found = {}
    if up_log and os.path.exists(up_log):
        with open(up_log, errors="replace") as f:
            for line in f:
                m = SERVING.search(line)
                if m and role_of(m.group(1)):
                    name, addr, pid = m.group(1), m.group(2), int(m.group(3))
                    for old in [p for p, n in found.items() if n["name"] == name]:
                        del found[old]
                    found[pid] = {"name": name, "role": role_of(name), "port": port_of(addr)}
    if found or not up_pid:
        return found
    kids = {p: c for p, c in children_of(up_pid).items() if c.startswith("searchtree-")}
    for line in run(["ss", "-tlnpH"]).splitlines():
        users = USERS.search(line)
        fields = line.split()
        if users and int(users.group(2)) in kids and len(fields) >= 4:
            pid = int(users.group(2))
            found[pid] = {"name": f"{kids[pid]}:{pid}", "role": role_of(kids[pid]),
                          "port": port_of(fields[3])}
    return found


def cpu_ticks(pids):
    """pid -> utime + stime in clock ticks (absent if the process is gone)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[pid] = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return out


def snapshot(up_log, up_pid):
    t0 = time.time()
    found = nodes(up_log, up_pid)
    socks = sockets()
    cpu = cpu_ticks(found)
    t1 = time.time()
    return {"time": (t0 + t1) / 2, "nodes": {str(p): n for p, n in found.items()},
            "cpu_ticks": {str(p): t for p, t in cpu.items()}, "sockets": socks}


def watch(a):
    snaps = []
    for at in sorted(a.at):
        delay = a.start + at - time.time()
        if delay > 0:
            time.sleep(delay)
        snaps.append(snapshot(a.up_log, a.up_pid))
    with open(a.out, "w") as f:
        json.dump({"start": a.start, "snapshots": snaps}, f)


LINKS = ("root<->bench", "root<->parents", "parents<->leaves")


def link_of(sock, nodes_by_pid, roles_by_port, owner_by_local, bench_pid):
    """(link name, which counter is 'down') for a socket counted from its
    upper end, or None for the other end of a link and for strangers."""
    node = nodes_by_pid.get(sock["pid"])
    if node is None:
        return None
    if port_of(sock["local"]) == node["port"]:
        # An accepted connection: counted here only at the root (its
        # clients have no node to count them); parents' and leaves'
        # accepted sockets are the lower ends of links counted above.
        if node["role"] != "root":
            return None
        client = owner_by_local.get(sock["peer"])
        name = "root<->bench" if bench_pid and client == bench_pid else "root<->other clients"
        return name, "received"
    peer_role = roles_by_port.get(port_of(sock["peer"]))
    if peer_role is None:
        return None
    if node["role"] == "root" and peer_role == "parent":
        return "root<->parents", "sent"
    if node["role"] == "parent" and peer_role == "leaf":
        return "parents<->leaves", "sent"
    return f"{node['role']}<->{peer_role}", "sent"


def report(a):
    with open(a.watch) as f:
        snaps = json.load(f)["snapshots"]
    if len(snaps) < 2:
        sys.exit("report: need at least two snapshots")
    before, after = snaps[0], snaps[-1]
    span = after["time"] - before["time"]
    queries = a.completed * span / a.duration if a.duration > 0 else a.completed
    nodes_by_pid = {int(p): n for p, n in after["nodes"].items()}
    roles_by_port = {n["port"]: n["role"] for n in nodes_by_pid.values()}
    owner_by_local = {}
    for snap in (before, after):
        for s in snap["sockets"]:
            owner_by_local.setdefault(s["local"], s["pid"])
    old = {s["key"]: s for s in before["sockets"]}
    links = {}

    def slot(name):
        return links.setdefault(name, {"down_bytes": 0, "up_bytes": 0, "sockets": 0,
                                       "new_sockets": 0, "vanished_sockets": 0})

    seen = set()
    for s in after["sockets"]:
        link = link_of(s, nodes_by_pid, roles_by_port, owner_by_local, a.bench_pid)
        if link is None:
            continue
        name, down = link
        up = "received" if down == "sent" else "sent"
        entry = slot(name)
        prev = old.get(s["key"])
        if prev is not None and prev["sent"] <= s["sent"] and prev["received"] <= s["received"]:
            seen.add(s["key"])
        else:
            prev = {"sent": 0, "received": 0}  # opened between the snapshots
            entry["new_sockets"] += 1
        entry["sockets"] += 1
        entry["down_bytes"] += s[down] - prev[down]
        entry["up_bytes"] += s[up] - prev[up]
    # Sockets closed between the snapshots: what they carried after the
    # first snapshot is lost; count them so that the reader knows.
    before_nodes = {int(p): n for p, n in before["nodes"].items()}
    still_open = {s["key"] for s in after["sockets"]}
    for s in before["sockets"]:
        if s["key"] in seen or s["key"] in still_open:
            continue
        link = link_of(s, before_nodes, roles_by_port, owner_by_local, a.bench_pid)
        if link is not None:
            slot(link[0])["vanished_sockets"] += 1
    for entry in links.values():
        entry["down_per_query"] = entry["down_bytes"] / queries if queries else None
        entry["up_per_query"] = entry["up_bytes"] / queries if queries else None

    tick_ms = 1000.0 / os.sysconf("SC_CLK_TCK")
    cpu = {}
    for pid, node in nodes_by_pid.items():
        t0, t1 = before["cpu_ticks"].get(str(pid)), after["cpu_ticks"].get(str(pid))
        role = cpu.setdefault(node["role"], {"cpu_ms": 0.0, "processes": 0, "missing": 0})
        if t0 is None or t1 is None:
            role["missing"] += 1  # restarted or gone: its CPU is not counted
            continue
        role["cpu_ms"] += (t1 - t0) * tick_ms
        role["processes"] += 1
    for role in cpu.values():
        role["cpu_ms_per_query"] = role["cpu_ms"] / queries if queries else None
    json.dump({"span_s": span, "queries": queries, "links": links, "cpu": cpu,
               "clock_tick_ms": tick_ms}, sys.stdout, indent=1)
    print()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="take timed snapshots of the tree's sockets and CPU")
    w.add_argument("--up-log", help="stderr of `searchtree up`")
    w.add_argument("--up-pid", type=int, help="pid of `searchtree up` (fallback: its children)")
    w.add_argument("--start", type=float, required=True, help="epoch seconds the offsets count from")
    w.add_argument("--at", type=float, action="append", required=True, help="offset of a snapshot, s")
    w.add_argument("--out", required=True)
    r = sub.add_parser("report", help="bytes per query per link and CPU-ms per query per role")
    r.add_argument("--watch", required=True, help="the file `watch` wrote")
    r.add_argument("--completed", type=float, required=True, help="queries completed in the measured window")
    r.add_argument("--duration", type=float, required=True, help="the measured window, s")
    r.add_argument("--bench-pid", type=int, help="pid of the load generator")
    a = p.parse_args()
    watch(a) if a.command == "watch" else report(a)


if __name__ == "__main__":
    main()
