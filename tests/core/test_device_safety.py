"""Code that runs on a GPU user's tensors copies them to the host before NumPy reads them.

``tensor.numpy()`` raises on a CUDA tensor, which no CPU test can see: notebook 03's token-probability
figure crashed this way on the first run on a GPU (``plotting.top_tokens``). This rule reads the
source: every ``.numpy()`` in the library is reached through ``.cpu()`` or ``.to("cpu")``.
"""

import ast
from pathlib import Path

import avisc_lib

LIBRARY = Path(avisc_lib.__file__).parent


def _through_the_host(receiver: ast.expr) -> bool:
    """Whether the call chain before ``.numpy()`` holds a ``.cpu()`` or ``.to("cpu")`` (in arithmetic,
    on its left operand)."""
    node = receiver
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript, ast.BinOp)):
        if isinstance(node, ast.BinOp):
            node = node.left
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "cpu":
                return True
            if node.func.attr == "to" and any(isinstance(a, ast.Constant) and a.value == "cpu" for a in node.args):
                return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def numpy_calls_off_the_host(source: str) -> list[int]:
    """Line numbers of ``.numpy()`` calls whose receiver is not copied to the host first."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "numpy"
        and not _through_the_host(node.func.value)
    ]


def test_the_rule_tells_a_host_copy_from_none():
    assert numpy_calls_off_the_host("x.topk(3).values.numpy()") == [1]
    assert numpy_calls_off_the_host("x.float().cpu().softmax(-1).numpy()") == []
    assert numpy_calls_off_the_host('x.detach().to("cpu")[0].numpy()') == []
    assert numpy_calls_off_the_host('x.to("cuda").numpy()') == [1]
    assert numpy_calls_off_the_host("(x.cpu() * s + m).clamp(0, 1).numpy()") == []
    assert numpy_calls_off_the_host("(s * x.cpu()).numpy()") == [1]


def test_every_numpy_call_in_the_library_reads_host_memory():
    found = {
        str(path.relative_to(LIBRARY)): lines
        for path in sorted(LIBRARY.rglob("*.py"))
        if (lines := numpy_calls_off_the_host(path.read_text()))
    }
    assert not found, f".numpy() on a tensor that may be on a GPU (add .cpu() before it): {found}"
