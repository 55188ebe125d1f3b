#!/usr/bin/env python3
"""Where the CPU went in one stretch of a `perf record -a` run, by process.

The fan-out benchmark's server and clients share the machine's cores; its
terminal wave lasts a few hundred milliseconds of a run of several seconds.
This splits the samples of that stretch by process, and lists the hottest
functions (leaf frames) of one of them (docs/performance.md, "The wave at
1.13 times the floor"):

    perf record -a -F 4000 -g -o /tmp/wave.data -- \\
        target/release/deps/fanout-<hash> --idle 0
    tests/benches/perf-window.py /tmp/wave.data                   # busy 10 ms slices, by pid
    tests/benches/perf-window.py /tmp/wave.data T0 T1             # samples per pid in [T0, T1)
    tests/benches/perf-window.py /tmp/wave.data T0 T1 PID [TOP]   # PID's hottest functions there

T0 and T1 are perf's timestamps in seconds, as the first form prints them.
"""

import collections
import subprocess
import sys


def samples(data):
    """(pid, time, [frames, leaf first]) for every sample but the idle task's."""
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "pid,time,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    for block in out.split("\n\n"):
        lines = block.strip().split("\n")
        head = lines[0].split()
        if len(head) < 2 or head[0] == "0":
            continue
        frames = [line.strip().split(None, 1)[-1][:110] for line in lines[1:]]
        yield head[0], float(head[1].rstrip(":")), frames


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    data = args[0]
    if len(args) == 1:
        slices = collections.Counter((round(t, 2), pid) for pid, t, _ in samples(data))
        for (t, pid), n in sorted(slices.items()):
            if n >= 10:
                print(f"{t:.2f} pid {pid}: {n}")
        return
    t0, t1 = float(args[1]), float(args[2])
    inside = [(pid, frames) for pid, t, frames in samples(data) if t0 <= t < t1]
    if len(args) == 3:
        for pid, n in collections.Counter(pid for pid, _ in inside).most_common():
            print(f"pid {pid}: {n} samples")
        return
    pid, top = args[3], int(args[4]) if len(args) > 4 else 30
    mine = [frames for p, frames in inside if p == pid and frames]
    kernel = sum(1 for frames in mine if "kernel" in frames[0])
    print(f"pid {pid}: {len(mine)} samples, {kernel} of them in the kernel")
    for leaf, n in collections.Counter(frames[0] for frames in mine).most_common(top):
        print(f"{n:6d} {100 * n / len(mine):5.1f}% {leaf}")


if __name__ == "__main__":
    main()
