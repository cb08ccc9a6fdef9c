"""The repository's structure (docs/DESIGN.md, "Layout"): no import cycles among the package's
modules (function-level imports count), optional heavy dependencies stay unimported on the CPU
path, nothing refers to files outside the repository, and the dispatch table's dtype lists are
the compiled binding's."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.backends import require_triton
from jsla_fast.ops import BACKENDS, why_unavailable

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "build", "demo_out", "__pycache__", ".pytest_cache", "dist"}


def package_modules() -> dict[str, Path]:
    mods = {}
    for path in sorted((ROOT / "jsla_fast").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (top level or inside a
    function). ``from pkg import name`` depends on ``pkg.name`` when that is a module, else on
    ``pkg``; the implicit import of a parent package is not an edge (Python runs it first anyway)."""
    mods = package_modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                targets = subs + ([base] if len(subs) < len(node.names) else [])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in mods and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and "jsla_fast.model.base" in graph["jsla_fast.model.jsla"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_op_layer_sits_below_the_model():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("jsla_fast.ops"):
            above = {d for d in deps if not d.startswith(("jsla_fast.ops", "jsla_fast.kernels"))}
            assert not above, f"{name} imports {sorted(above)}: the op layer must not depend on anything above it"


def test_a_cpu_model_imports_no_optional_heavy_module():
    code = """
import sys, torch
from jsla_fast import JSLA, JSLAConfig, PoseNet
from jsla_fast.runtime import Localizer
model = JSLA(JSLAConfig(), backend="auto").eval()
with torch.no_grad():
    model(torch.randn(1, 3, 64, 64))
    PoseNet(JSLAConfig()).eval()(torch.randn(1, 3, 64, 64))
Localizer(model)
print(sorted(m for m in ("triton", "rospy", "onnx", "onnxruntime", "onnxscript", "cv2", "openvino", "matplotlib")
             if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_resolving_triton_imports_it_only_then():
    require_triton()
    code = """
import sys
from jsla_fast.ops import why_unavailable
before = "triton" in sys.modules
why_unavailable("triton", "cpu")
print(before, "triton" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


#: the planning material beside the checkout that a clone of this repository does not have. Spelled
#: in pieces so that this file, which has to name it, does not match its own pattern
OUTSIDE_NAMES = ("../" + "shared", "../" + ".library", "SP" + "EC", "paper" + "_notes.md", "STY" + "LE.md")
OUTSIDE = re.compile("|".join(re.escape(n) if "." in n else rf"\b{n}\b" for n in OUTSIDE_NAMES))


def repository_text_files():
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts) or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096]:
            continue  # binary (the built extension, images)
        yield rel, data.decode("utf-8", errors="replace")


def test_nothing_refers_outside_the_repository():
    found = [f"{rel}:{n}: {line.strip()[:100]}" for rel, text in repository_text_files()
             for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


def test_the_outside_reference_pattern_catches_them():
    shared, _, spec, notes, _ = OUTSIDE_NAMES
    for line in (f"see {shared}/{spec}.md", f"({spec} §3)", f"{notes} says"):
        assert OUTSIDE.search(line)
    assert not OUTSIDE.search("SPECTRUM, inspect, the shared checks")
    assert not OUTSIDE.search("docs/DESIGN.md, \"The fused ops\"")


# -- the dispatch table's dtypes are the binding's ------------------------------------------------
def binding_dtypes(source: str, place: str) -> set[torch.dtype]:
    """The dtypes ``const OpPlace <place>{device, {at::k...}, ...}`` in csrc/torch admits."""
    text = (ROOT / "csrc" / "torch" / source).read_text()
    match = re.search(rf"OpPlace {place}\{{[^{{]*\{{([^}}]*)\}}", text)
    assert match, f"no OpPlace {place} in csrc/torch/{source}"
    names = {"kFloat": torch.float32, "kDouble": torch.float64, "kHalf": torch.float16, "kBFloat16": torch.bfloat16}
    return {names[n] for n in re.findall(r"at::(k\w+)", match.group(1))}


@pytest.mark.parametrize("backend,source,place", [("cpp", "cpu.cpp", "kCpu"), ("cuda", "cuda.cpp", "kCuda")])
def test_backend_dtypes_are_the_bindings(backend, source, place):
    assert set(BACKENDS[backend].dtypes) == binding_dtypes(source, place)


def test_the_cpp_binding_runs_exactly_its_listed_dtypes():
    assert why_unavailable("cpp", "cpu") is None, why_unavailable("cpp", "cpu")
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        feat = torch.randn(1, 3, 4, 4).to(dtype)
        weight, bias = torch.randn(1, 3, 3, 3).to(dtype), torch.zeros(1).to(dtype)
        try:
            torch.ops.jsla.attention(feat, feat, weight, bias, 0.01)
            ran = True
        except (RuntimeError, TypeError, ValueError):
            ran = False
        assert ran == (dtype in BACKENDS["cpp"].dtypes), dtype


# -- one model interface --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["jsla", "posenet", "poselstm"])
def test_every_registered_model_implements_the_interface(kind, seed):
    from helpers.models import randomise_batchnorm
    from jsla_fast import ModelConfig
    from jsla_fast.model import MODELS, Model, model_class

    cls = model_class(kind)
    assert MODELS[kind] is cls and issubclass(cls, Model) and cls.kind == kind
    model = cls(ModelConfig(grid=7)).eval()
    randomise_batchnorm(model, torch.Generator().manual_seed(seed))
    assert model.set_backend("reference") is model and model.set_progress(0.5) == model.tau
    assert model.pose_heads() and all(isinstance(h, torch.nn.Linear) for h in model.pose_heads())
    assert len(model.layer_names) == (4 if kind == "jsla" else 0)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = model(x)
        folded = model.fuse()
        got = model(x)
    assert folded == 57 + (kind == "jsla")  # every BasicConv2d of the backbone, and JSLA's layer selector
    assert got.layers.shape == want.layers.shape == (2, 3 if kind == "jsla" else 0)
    torch.testing.assert_close(got.pose, want.pose, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        model_class("nope")


@pytest.mark.parametrize("task", ["pose", "scene"])
@pytest.mark.parametrize("kind", ["jsla", "posenet", "poselstm"])
def test_every_model_has_the_declared_parts(kind, task):
    """What Model declares, every registered kind has, with the declared types, so callers
    (runtime, calibrate, uncertainty, train) use them without probing: the head reads the dropout's
    output (what MC dropout samples), and only a pose model has a pose decoder."""
    from typing import get_type_hints

    from jsla_fast import ModelConfig, ModelOutput
    from jsla_fast.model import GoogLeNet, Model, model_class
    from jsla_fast.model.pose_head import PoseDecoder, PoseHead

    declared = {n for n in get_type_hints(Model) if not n.startswith("_")} - {"kind", "has_static_form", "training"}
    assert {"config", "normalization", "backbone", "dropout", "head", "pose_decoder", "tau"} <= declared
    model = model_class(kind)(ModelConfig(task=task, num_classes=5, grid=7)).eval()
    assert all(hasattr(model, name) for name in declared), sorted(n for n in declared if not hasattr(model, n))
    assert isinstance(model.config, ModelConfig) and model.normalization is None
    assert isinstance(model.backbone, GoogLeNet) and isinstance(model.dropout, torch.nn.Dropout)
    assert isinstance(model.head, PoseHead)
    assert isinstance(model.pose_decoder, PoseDecoder) if task == "pose" else model.pose_decoder is None
    seen = []
    hook = model.head.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    dropped = model.dropout.register_forward_hook(lambda mod, args, out: seen.append(out))
    try:
        with torch.inference_mode():
            out = model(torch.randn(2, 3, 64, 64))
    finally:
        hook.remove()
        dropped.remove()
    assert isinstance(out, ModelOutput) and len(seen) == 2 and seen[0] is seen[1]  # head(dropout(features))
    assert (out.pose is None) == (task == "scene") and (out.logits is None) == (task == "pose")


def test_the_old_names_of_the_shared_types_still_work():
    """JSLAConfig and JSLAOutput, the names from when JSLA was the only model, are the same types."""
    import jsla_fast
    from jsla_fast.config import JSLAConfig, ModelConfig
    from jsla_fast.model.base import JSLAOutput, ModelOutput
    from jsla_fast.model.jsla import JSLAOutput as from_jsla

    assert JSLAConfig is ModelConfig is jsla_fast.JSLAConfig is jsla_fast.ModelConfig
    assert JSLAOutput is ModelOutput is from_jsla is jsla_fast.JSLAOutput is jsla_fast.ModelOutput
    assert jsla_fast.PoseNet(JSLAConfig(grid=7)).config == ModelConfig(grid=7)


def test_no_caller_probes_a_model_for_attributes():
    """The parts callers need are declared on Model: no getattr/hasattr on a model (or its pose
    decoder) anywhere in the package."""
    probe = re.compile(r"\b(getattr|hasattr)\(\s*(\w+\.)*(model|decoder|source|cls)\b")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in package_modules().values()
             for n, line in enumerate(path.read_text().splitlines(), 1) if probe.search(line)]
    assert found == []
    assert probe.search('if getattr(model, "pose_decoder", None) is None:')
    assert probe.search('bool(getattr(decoder, "calibrated", False))')
