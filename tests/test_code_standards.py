"""Code standards that can drift: no function in src/ over 80 lines without a comment that
says why (``# long: <reason>`` just above the ``def`` or its decorators)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lipoclass"
MAX_LINES = 80
_REASON = re.compile(r"^\s*#\s*long:\s*\S")


def long_functions(root: Path = SRC, max_lines: int = MAX_LINES) -> list[str]:
    """``path:line name (n lines)`` of every function over ``max_lines`` lines (``def`` to
    its last line) whose comment block just above it has no ``# long:`` reason."""
    out = []
    for py in sorted(root.rglob("*.py")):
        lines = py.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), filename=str(py))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = (node.end_lineno or node.lineno) - node.lineno + 1
            if n <= max_lines:
                continue
            top = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1  # 0-based
            above = []
            while top > 0 and lines[top - 1].lstrip().startswith("#"):
                top -= 1
                above.append(lines[top])
            if not any(_REASON.match(c) for c in above):
                out.append(f"{py.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_long_function_without_a_reason() -> None:
    found = long_functions()
    assert not found, "split these or say why above them ('# long: ...'):\n" + "\n".join(found)


def test_the_check_finds_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f"def short():\n    return 1\n\n\ndef long_one():\n{body}\n\n\n"
        f"# long: a numeric kernel\n@staticmethod\ndef excused():\n{body}\n"
    )
    assert long_functions(tmp_path / "pkg") == ["pkg/m.py:5 long_one (86 lines)"]
