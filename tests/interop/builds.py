"""Build the interop probes once and cache them, keyed by a hash of their sources.

``python -m tests.interop.builds`` (run by scripts/setup.sh) builds whatever is missing; the
session fixtures in ``conftest.py`` call the same functions, so a test run after setup finds
every probe built and starts in no time. The cache is ``$WXSUB_INTEROP_CACHE`` or
``~/.cache/wxsub/interop``: ``go-<hash>/probe`` (silenceper/wechat) and ``java-<hash>/probe.jar``
with its ``lib/`` (WxJava). Each build runs on a copy of the sources in the cache, so the work
tree gets no ``target/`` and two builds never share a directory; the result is renamed into
place, so a half-done build is never taken for a finished one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["BuildError", "build_go", "build_java", "cache_root", "source_hash"]

HERE = Path(__file__).resolve().parent
GO_DIR = HERE / "go"
JAVA_DIR = HERE / "java"


class BuildError(RuntimeError):
    """A probe could not be built (the message says why, with the tool's output)."""


def cache_root() -> Path:
    root = os.environ.get("WXSUB_INTEROP_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "wxsub" / "interop"


def _sources(src: Path) -> list[Path]:
    skip = {"target", "bin"}
    return sorted(
        p for p in src.rglob("*") if p.is_file() and not skip.intersection(p.relative_to(src).parts)
    )


def source_hash(src: Path) -> str:
    """A short hash of every source file's path and bytes."""
    digest = hashlib.sha256()
    for path in _sources(src):
        digest.update(path.relative_to(src).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _cached(kind: str, src: Path, result: str, build: Callable[[Path], None]) -> Path:
    """``<cache>/<kind>-<hash>/<result>``, built by ``build(workdir)`` when missing."""
    root = cache_root()
    done = root / f"{kind}-{source_hash(src)}"
    if (done / result).exists():
        return done / result
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        shutil.copytree(src, work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("target"))
        build(work)
        try:
            work.rename(done)
        except OSError:  # another build finished first: keep its result
            if not (done / result).exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return done / result


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    tool = shutil.which(cmd[0])
    if tool is None:
        raise BuildError(f"{cmd[0]} not found on PATH (needed to build {cwd.name} probe)")
    proc = subprocess.run(
        [tool, *cmd[1:]],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def build_go() -> Path:
    """The silenceper/wechat probe binary."""

    def build(work: Path) -> None:
        _run(["go", "build", "-o", "probe", "."], work, {"GOFLAGS": "-mod=mod"})

    return _cached("go", GO_DIR, "probe", build)


def build_java() -> Path:
    """The WxJava probe jar (its dependencies in ``lib/`` beside it)."""

    def build(work: Path) -> None:
        _run(["mvn", "-q", "-B", "package"], work)
        target = work / "target"
        shutil.move(target / "probe.jar", work / "probe.jar")
        shutil.move(target / "lib", work / "lib")
        shutil.rmtree(target)

    return _cached("java", JAVA_DIR, "probe.jar", build)


def main() -> int:
    failed = False
    for name, build in (("silenceper/wechat (Go)", build_go), ("WxJava (Maven)", build_java)):
        start = time.monotonic()
        try:
            path = build()
        except BuildError as exc:
            print(f"interop probe {name}: NOT BUILT: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"==> interop probe {name}: {path} ({time.monotonic() - start:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
