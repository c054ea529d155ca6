#!/usr/bin/env python3
"""Puts a benchmark's table into docs/benchmarks.md between its markers, with the
machine it ran on. Usage: record-bench.py DOC NAME TABLE_FILE"""
import datetime
import os
import platform
import sys

doc, name, table_file = sys.argv[1:4]
table = "\n".join(l for l in open(table_file).read().splitlines() if l.startswith("|"))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem_kb = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
machine = (f"{datetime.date.today()}, {os.cpu_count()} cores ({cpu}), {mem_kb // 1024 // 1024} GiB, "
           f"{platform.system()} {platform.release()}")
begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
text = open(doc).read()
if begin not in text or end not in text:
    sys.exit(f"{doc}: no {begin} / {end} markers")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(f"{head}{begin}\nMeasured {machine}.\n\n{table}\n{end}{tail}")
print(f"{doc}: {name} recorded")
