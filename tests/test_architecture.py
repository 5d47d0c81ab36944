"""The repository's shape: no import cycles, modules of a readable size, nothing binary or
generated committed, and every document the code cites is in the repository."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400                                  # STYLE.md rule 5: a module of a few hundred lines


def _repo_files() -> list[str]:
    """Tracked files plus new ones git does not ignore (what the next commit can hold)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (the repository checks need `git ls-files`)")
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sorted({f for f in out.decode("utf-8", "surrogateescape").split("\0") if f and (ROOT / f).is_file()})


# --- (a) import cycles -------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(ROOT.glob("engine/**/*.py")) + sorted(ROOT.glob("kernels/**/*.py")):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The innermost module of ours that `name` (a dotted import target) lies in, if any."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> modules of engine/ and kernels/ it imports, read statically (every import
    statement, also those inside functions). `from pkg import name` where pkg.name is a
    submodule imports that submodule."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), str(p))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                dep = _resolve(t, mods)
                if dep and dep != m:
                    graph[m].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_engine_and_kernels():
    graph = import_graph()
    assert "engine.config" in graph and "engine.meta.record" in graph      # the walk sees our modules
    found = cycles(graph)
    assert not found, "import cycles (break each by moving what both sides need into a module both " \
                      "import): " + "; ".join(" <-> ".join(c) for c in found)


def test_kernels_do_not_import_engine():
    graph = import_graph()
    bad = {m: sorted(d for d in deps if d.startswith("engine")) for m, deps in graph.items() if m.startswith("kernels")}
    assert not {m: d for m, d in bad.items() if d}, bad


# --- (b) module size ---------------------------------------------------------------------------
def test_no_module_over_400_lines_outside_tests():
    long = {}
    for f in _repo_files():
        if f.endswith(".py") and not f.startswith("tests/"):
            n = len((ROOT / f).read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                long[f] = n
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"


# --- (c) no binaries or databases --------------------------------------------------------------
BINARY_SUFFIXES = (".deb", ".rpm", ".whl", ".egg", ".so", ".dylib", ".dll", ".exe", ".a", ".o", ".pyc",
                   ".sqlite", ".sqlite3", ".db", ".onnx", ".engine", ".plan", ".trt", ".pt", ".pth",
                   ".npy", ".npz", ".zip", ".tar", ".gz", ".xz", ".bz2", ".7z")
# Binary files the repository does hold on purpose, each small:
#   tests/data/*.jpg  JPEG fixtures Pillow cannot make (arithmetic-coded, YCCK; tests/data/README.md)
#   benchmarks/results/stages.png, scale.png  the figures the README shows with the benchmark numbers
ALLOWED_BINARY = {"tests/data/*.jpg": 64 << 10, "benchmarks/results/stages.png": 128 << 10,
                  "benchmarks/results/scale.png": 128 << 10}


def _allowed_binary(f: str) -> bool:
    return any(Path(f).match(pattern) and (ROOT / f).stat().st_size <= limit
               for pattern, limit in ALLOWED_BINARY.items())


def test_no_binaries_or_databases_committed():
    files = _repo_files()
    by_name = [f for f in files if f.lower().endswith(BINARY_SUFFIXES)]
    assert not by_name, f"binaries, models or databases in the repository (remove them; .gitignore): {by_name}"
    binary = [f for f in files if b"\0" in (ROOT / f).read_bytes() and not _allowed_binary(f)]
    assert not binary, f"binary files in the repository (only the small fixtures of ALLOWED_BINARY): {binary}"


def test_tests_data_holds_only_documented_fixtures():
    data = [f for f in _repo_files() if f.startswith("tests/data/") and f != "tests/data/README.md"]
    readme = (ROOT / "tests/data/README.md").read_text(encoding="utf-8")
    assert all(Path(f).name in readme for f in data), "every fixture in tests/data is described in its README"


# --- (d) cited documents exist -----------------------------------------------------------------
CITING = ("engine/", "kernels/", "config/", "scripts/", "tests/", "benchmarks/", ".ci/")
CITING_FILES = ("README.md", "build_engine.py", "Dockerfile.gpu", "pyproject.toml")
# A file name ending in .md, not part of a longer path written with a variable ($out/x.md).
MD_CITATION = re.compile(r"(?<![\w$/{}.-])((?:\.\./)?(?:[\w.-]+/)*[\w.-]+\.md)\b")
# Markdown files the code writes (benchmark reports), named in code but not documents to read.
WRITTEN_BY_CODE = {"latest.md", "gpu-latest.md"}


def cited_documents() -> dict[str, set[str]]:
    """Document -> files citing it, over the code, config, scripts, tests and the README."""
    cites: dict[str, set[str]] = {}
    for f in _repo_files():
        if not (f.startswith(CITING) or f in CITING_FILES) or f == "tests/test_architecture.py":
            continue
        try:
            text = (ROOT / f).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for doc in MD_CITATION.findall(text):
            if Path(doc).name not in WRITTEN_BY_CODE:
                cites.setdefault(doc, set()).add(f)
    return cites


def _exists(doc: str, citing: str) -> bool:
    doc = doc.removeprefix("../")
    candidates = [ROOT / doc, ROOT / "docs" / doc, (ROOT / citing).parent / doc]
    return any(c.is_file() and ROOT in c.resolve().parents for c in candidates)


def test_every_cited_document_is_in_the_repository():
    cites = cited_documents()
    assert "docs/reference.md" in cites                    # the walk sees the citations
    missing = {doc: sorted(by) for doc, by in cites.items() if not all(_exists(doc, f) for f in by)}
    assert not missing, f"documents cited but not in the repository (add them under docs/ or fix the " \
                        f"citation): {missing}"
