#!/usr/bin/env python3
"""An independent read of the ftrace trace clocks, not through clockpath's code: for each clock
named on the command line, a private tracing instance is set to it, trace_marker lines are
written between two CLOCK_MONOTONIC reads, and their timestamps read back from the instance's
`trace` in its default text format (µs for the ns clocks, counts for the others).

    ftrace_read.py TRACEFS CLOCK...      -> one JSON object: clock -> [offset_ns, uncertainty_ns]
    ftrace_read.py TRACEFS --mix N GAP_MS -> N lines `S.NNNNNNNNN do_clocksource_switch_entry`
        stamped on CLOCK_MONOTONIC, each followed by a marker stamped by ftrace on `local`,
        printed as `S.UUUUUU000 first_read`: a trace that mixes the two clocks.
"""
import json, os, re, sys, time

MONO = time.CLOCK_MONOTONIC
LINE = re.compile(r"\s(\d+)(?:\.(\d+))?: tracing_mark_write: cpt (\d+)$")


def instance(tracefs):
    d = os.path.join(tracefs, "instances", f"clockpath-test-{os.getpid()}")
    os.mkdir(d)
    return d


def read_back(d):
    out = {}
    with open(os.path.join(d, "trace")) as f:
        for line in f:
            m = LINE.search(line.rstrip("\n"))
            if m:
                out[int(m.group(3))] = (int(m.group(1)), m.group(2))
    return out


def offsets(tracefs, clocks):
    d = instance(tracefs)
    result = {}
    try:
        hz = os.sysconf("SC_CLK_TCK")
        for clock in clocks:
            with open(os.path.join(d, "trace_clock"), "w") as f:
                f.write(clock)
            fd = os.open(os.path.join(d, "trace_marker"), os.O_WRONLY)
            brackets = {}
            for i in range(32):
                b = time.clock_gettime_ns(MONO)
                os.write(fd, f"cpt {i}\n".encode())
                a = time.clock_gettime_ns(MONO)
                brackets[i] = (b, a)
            os.close(fd)
            best = None
            for i, (whole, frac) in read_back(d).items():
                b, a = brackets[i]
                if frac is not None:  # seconds.microseconds
                    value, res = whole * 1_000_000_000 + int(frac.ljust(6, "0")[:6]) * 1000, 1000
                else:  # counts (uptime: USER_HZ ticks)
                    value, res = whole * (1_000_000_000 // hz), 1_000_000_000 // hz
                unc = (a - b) // 2 + 1 + res
                off = value - (b + (a - b) // 2)
                if best is None or unc < best[1]:
                    best = (off, unc)
            result[clock] = best
    finally:
        os.rmdir(d)
    print(json.dumps(result))


def mix(tracefs, n, gap_ms):
    d = instance(tracefs)
    try:
        with open(os.path.join(d, "trace_clock"), "w") as f:
            f.write("local")
        fd = os.open(os.path.join(d, "trace_marker"), os.O_WRONLY)
        entries = []
        for i in range(n):
            t = time.clock_gettime_ns(MONO)
            os.write(fd, f"cpt {i}\n".encode())
            entries.append(t)
            # Pace the runs so each read (tens of ms ahead on `local`) sorts before the next entry.
            while time.clock_gettime_ns(MONO) < t + gap_ms * 1_000_000:
                pass
        os.close(fd)
        reads = read_back(d)
    finally:
        os.rmdir(d)
    for i, t in enumerate(entries):
        whole, frac = reads[i]
        print(f"{t // 1_000_000_000}.{t % 1_000_000_000:09d} do_clocksource_switch_entry")
        print(f"{whole}.{frac.ljust(6, '0')[:6]}000 first_read")


if __name__ == "__main__":
    if sys.argv[2] == "--mix":
        mix(sys.argv[1], int(sys.argv[3]), int(sys.argv[4]))
    else:
        offsets(sys.argv[1], sys.argv[2:])
