#!/usr/bin/env python3
"""Checks the coroutine rules of docs/architecture.md on the C++ sources:
GCC 12 miscompiles the forms below (a coroutine whose first suspension is
`if (!co_await f())` never ran; `co_await` inside `?:` destroyed the wrong
temporaries; an *_ASSIGN macro as the unbraced body of an `if` declares its
variable in the wrong scope). Prints each violation as file:line and fails.

Usage: source_rules.py SOURCE_DIR
"""
import os
import re
import sys

RULES = [
    (re.compile(r"!\s*\(?\s*co_await\b"), "result of co_await negated in place: await into a variable"),
    (re.compile(r"\?\s*co_await\b|\?[^;]*?[^:]:\s*co_await\b"), "co_await inside ?:"),
    (re.compile(r"\bif\s*\(.*\)\s*STRATA_(CO_)?TRY_ASSIGN\b"),
     "STRATA_*TRY_ASSIGN as the unbraced body of an if"),
]
DIRS = ["base", "block", "nbd", "qmp", "tools", "include", "bench", "jobs", "tests/unit"]


def violations(root):
    for d in DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for name in sorted(files):
                if not name.endswith((".cc", ".h")):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for number, line in enumerate(f, 1):
                        code = line.split("//", 1)[0]
                        for pattern, what in RULES:
                            if pattern.search(code):
                                yield f"{os.path.relpath(path, root)}:{number}: {what}"


def main():
    found = list(violations(sys.argv[1]))
    for v in found:
        print(v)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
