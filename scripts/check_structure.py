"""The structure `make lint` keeps, beside the import-linter contracts (.importlinter):

- no import cycle between modules of the package (TYPE_CHECKING imports count: a cycle
  closed by one is still a cycle for a reader);
- no class over 250 lines, no function over 60;
- no "issue N" in the package: the history is in git, not in the code.

Prints each breach and exits 1, or exits 0 silently.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import grimp

PACKAGE = "inboxd"
ROOT = Path(__file__).resolve().parent.parent / "daemon" / PACKAGE
MAX_CLASS = 250
MAX_FUNCTION = 60
ISSUE = re.compile(r"\bissues? #?\d+", re.IGNORECASE)


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    graph = grimp.build_graph(PACKAGE, exclude_type_checking_imports=False)
    modules = sorted(graph.modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & graph.modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def sizes() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            limit = MAX_CLASS if isinstance(node, ast.ClassDef) else MAX_FUNCTION \
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None
            if limit is None:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit:
                what = "class" if isinstance(node, ast.ClassDef) else "function"
                out.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {what} {node.name} has {lines} lines "
                           f"(at most {limit})")
    return out


def history() -> list[str]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE.search(line):
                out.append(f"{path.relative_to(ROOT.parent)}:{n}: names an issue (history belongs in git): "
                           f"{line.strip()[:80]}")
    return out


def main() -> int:
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles()] + sizes() + history()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
