"""The engine cache: exported artifacts built on first use, one folder per set of weights, reused afterwards.

`$CLIPSAM_CACHE_DIR/engines/<key>/` is a complete `clipsam export` folder. The key covers everything that
changes the graphs (`EngineSpec`): the model names, each model's weights (the checkpoint's sha256, or
"random-init, seed N"), the artifact format and clipsam versions, and which copies it holds (int8).

Safety, in the order a build happens:
- one build per key at a time: an exclusive `flock` on `engines/.<key>.lock`; a second first run waits for it
  (bounded) and then finds the engine built;
- the export runs in a child process (the runtime never imports the export code or torch) into
  `engines/.build-<key>-<pid>/`, is verified against its manifest (every sha256), and only then renamed to
  `engines/<key>/`: a folder under the final name is always a finished export. A killed build leaves its temp
  folder behind; nothing reads it, and the next build of that key removes it (it holds the lock then);
- a finished engine is re-verified by hash whenever any of its files changed since its last verification
  (`.verified.json`: path, size, mtime and inode of every file), so truncation or replacement is caught.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from clipsam import __version__
from clipsam.engine.errors import CheckpointError, ClipsamError
from clipsam.engine.image_io import atomic_output
from clipsam.engine.manifest import FORMAT_VERSION, MANIFEST_NAME, ArtifactError, file_digest, read_manifest
from clipsam.engine.models.choice import DEFAULT_CLIP, ModelChoice
from clipsam.engine.models.zoo import get_model
from clipsam.engine.text.bank import default_cache_dir

STAMP_NAME = ".verified.json"
LAST_USED_NAME = ".last_used"
OPTIMIZED_DIR = "optimized"  # runtime caches derived from the graphs (onnxruntime / OpenVINO), not listed
NOT_LISTED = frozenset({STAMP_NAME, LAST_USED_NAME, OPTIMIZED_DIR})
LOCK_WAIT_S = 3600.0  # a build of the largest models with --int8 stays well under it on 2 cores
LOCK_POLL_S = 0.2
SECONDS_PER_M_PARAMS = 0.4  # the export's rough cost on a 2-core CPU (the announcement's estimate)
INT8_SECONDS_PER_M_PARAMS = 0.6

Log = Callable[[str], None]


@dataclass(frozen=True)
class ModelWeights:
    """One exported model: its zoo name and its weights ("sha256:<hex>" of the checkpoint, or
    "random-init, seed N"). checkpoint: the file (None for random weights); not part of the key."""

    name: str
    weights: str
    checkpoint: Path | None = None
    seed: int | None = None  # of random weights (also in `weights`)

    @property
    def random(self) -> bool:
        return self.checkpoint is None

    def describe(self) -> str:
        detail = f"random weights, seed {self.seed}" if self.random else self.weights[:19]
        return f"{self.name} ({detail})"


@dataclass(frozen=True)
class EngineSpec:
    """What an engine holds: SCLIP and / or SAM2 with their weights, and whether the int8 copies are in it."""

    clip: ModelWeights | None
    sam: ModelWeights | None
    int8: bool = False

    @property
    def models(self) -> tuple[ModelWeights, ...]:
        return tuple(model for model in (self.clip, self.sam) if model is not None)

    def identity(self) -> dict:
        """Everything the key hashes (not the checkpoint paths: the same weights anywhere are one engine)."""
        return {
            "models": [{"name": m.name, "weights": m.weights} for m in self.models],
            "artifact_format": FORMAT_VERSION,
            "clipsam": __version__,
            "copies": ["int8"] if self.int8 else [],
        }

    @property
    def key(self) -> str:
        """A readable, filesystem-safe key: the model names, "-int8", then 16 hex digits of the identity."""
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]
        names = "+".join(m.name for m in self.models)
        return f"{names}{'-int8' if self.int8 else ''}-{digest}"

    def without_int8(self) -> EngineSpec:
        return EngineSpec(self.clip, self.sam, False)

    def describe(self) -> str:
        return " + ".join(m.describe() for m in self.models) + (", with the int8 copies" if self.int8 else "")

    def estimated_seconds(self, from_base: bool) -> float:
        params = sum(get_model(m.name).params_m or 50.0 for m in self.models)
        int8 = INT8_SECONDS_PER_M_PARAMS * params if self.int8 else 0.0
        return int8 if from_base else SECONDS_PER_M_PARAMS * params + int8


def engines_root() -> Path:
    return default_cache_dir() / "engines"


def model_weights(name: str, checkpoint: Path | None, seed: int) -> ModelWeights:
    """A model's weights for the key: the checkpoint's sha256 (memoised by path, size, mtime and inode), or
    seeded random init when `checkpoint` is None."""
    if checkpoint is None:
        return ModelWeights(name, f"random-init, seed {seed}", None, seed)
    checkpoint = Path(checkpoint).resolve()
    if not checkpoint.is_file():
        raise ClipsamError(f"checkpoint '{checkpoint}' does not exist or is not a file")
    return ModelWeights(name, f"sha256:{checkpoint_digest(checkpoint)}", checkpoint)


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint; hashed once per (path, size, mtime, inode) and remembered under the cache."""
    info = path.stat()
    stat_key = f"{path}|{info.st_size}|{info.st_mtime_ns}|{info.st_ino}"
    memo = engines_root() / ".digests" / hashlib.sha256(stat_key.encode()).hexdigest()[:32]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        known = memo.read_text().strip()
        if len(known) == 64:
            return known
    digest = file_digest(path)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(memo, "w") as stream:
            stream.write(digest)
    return digest


def ensure_engine(
    spec: EngineSpec, log: Log, build: Callable[[EngineSpec, Path, Path | None, Log], None]
) -> Path:
    """The engine folder of `spec`, built first when no trusted one exists.

    build(spec, out_dir, base, log) writes a complete export into `out_dir` (base: a built engine of the same
    weights without the int8 copies, to add them to, or None); `cached_engine` passes
    child_build.export_in_child.
    """
    root = engines_root()
    final = root / spec.key
    if is_trusted(final):
        touch_last_used(final)
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root / f".{spec.key}.lock", log):
        if is_trusted(final):  # another process built it while this one waited
            touch_last_used(final)
            return final
        _remove_leftovers(root, spec.key)
        base = root / spec.without_int8().key if spec.int8 else None
        base = base if base is not None and is_trusted(base) else None
        minutes = max(1, round(spec.estimated_seconds(base is not None) / 60))
        header = [
            f"building the engine once: {spec.describe()} -> {final} "
            f"(about {minutes} min on this CPU; later runs start at once)"
        ]

        def relay(line: str) -> None:
            # The header waits for the builder's first line (the weights loaded): a checkpoint it refuses
            # is then the only line the user sees.
            while header:
                log(header.pop())
            log(line)

        temp = root / f".build-{spec.key}-{os.getpid()}"
        start = time.perf_counter()
        build(spec, temp, base, relay)
        try:
            read_manifest(temp)  # every graph's size and sha256, before the folder gets its final name
        except ArtifactError as err:
            shutil.rmtree(temp, ignore_errors=True)
            raise ClipsamError(f"the engine build produced an invalid folder: {err}") from err
        write_stamp(temp)
        os.rename(temp, final)
        touch_last_used(final)
        log(f"engine ready in {time.perf_counter() - start:.0f} s: {final}")
    return final


def is_trusted(folder: Path) -> bool:
    """A finished engine whose files are those verified last time, or that passes a full re-verification."""
    if not (folder / MANIFEST_NAME).is_file():
        return False
    if stamp_matches(folder):
        return True
    try:
        read_manifest(folder)
    except ArtifactError:
        return False
    write_stamp(folder)
    return True


def _listed_files(folder: Path) -> dict[str, list[int]]:
    """{relative path: [size, mtime_ns, inode]} of every file of the export (runtime caches left out)."""
    found = {}
    for root, dirs, names in os.walk(folder):
        at_top = Path(root) == folder
        dirs[:] = sorted(d for d in dirs if not (at_top and d in NOT_LISTED))
        for name in names:
            if at_top and (name in NOT_LISTED or name.startswith(".")):  # the cache's own files, temp files
                continue
            path = Path(root) / name
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = [info.st_size, info.st_mtime_ns, info.st_ino]
    return found


def write_stamp(folder: Path) -> None:
    """Record the files of a folder that has just passed read_manifest's full check."""
    listed = _listed_files(folder)
    with contextlib.suppress(OSError):
        with atomic_output(folder / STAMP_NAME, "w") as stream:
            json.dump(listed, stream)


def stamp_matches(folder: Path) -> bool:
    try:
        recorded = json.loads((folder / STAMP_NAME).read_text())
        return recorded == _listed_files(folder)
    except (OSError, ValueError):
        return False


def touch_last_used(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / LAST_USED_NAME).touch()


@contextlib.contextmanager
def _build_lock(path: Path, log: Log, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """An exclusive flock on `path`, waited for at most `wait_s` (the holder is building this engine)."""
    with open(path, "a+") as handle:
        deadline = time.monotonic() + wait_s
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClipsamError(
                        f"another process has been building this engine for over {wait_s:.0f} s "
                        f"(lock '{path}'): try again later"
                    ) from None
                if not said:
                    log("another process is building this engine: waiting for it")
                    said = True
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(root: Path, key: str) -> None:
    """Temp folders of killed builds of `key` (the lock is held: no build of it is running) and an untrusted
    folder under the final name."""
    for leftover in root.glob(f".build-{key}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if (root / key).exists():
        shutil.rmtree(root / key, ignore_errors=True)


@dataclass(frozen=True)
class EngineEntry:
    """One cached engine, as `clipsam engines` lists it."""

    key: str
    path: Path
    models: str
    weights: str
    bytes: int
    last_used: float


def list_engines() -> list[EngineEntry]:
    """The finished engines under the cache (by last use, newest first); the manifest is read, not hashed."""
    root = engines_root()
    entries = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if folder.name.startswith(".") or not (folder / MANIFEST_NAME).is_file():
            continue
        try:
            models = read_manifest(folder, check_files=False).data["models"]
        except ArtifactError:
            continue
        used = folder / LAST_USED_NAME
        entries.append(
            EngineEntry(
                folder.name,
                folder,
                " + ".join(entry["name"] for entry in models.values()),
                "; ".join(entry["weights"][:23] for entry in models.values()),
                sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                (used if used.exists() else folder / MANIFEST_NAME).stat().st_mtime,
            )
        )
    return sorted(entries, key=lambda entry: entry.last_used, reverse=True)


def clear_engines(key: str | None = None) -> list[str]:
    """Remove one engine (by key) or all; an engine being built is left alone (its lock is held)."""
    root = engines_root()
    keys = [entry.key for entry in list_engines()] if key is None else [key]
    if key is not None and not (root / key).is_dir():
        known = ", ".join(entry.key for entry in list_engines()) or "none"
        raise ClipsamError(f"no cached engine '{key}' (cached: {known})")
    removed = []
    for name in keys:
        lock = root / f".{name}.lock"
        with open(lock, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ClipsamError(f"engine '{name}' is being built right now: try again later") from None
            shutil.rmtree(root / name, ignore_errors=True)
            removed.append(name)
        lock.unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class CachedEngine:
    """An engine folder of the cache and its key (the JSON's models.engine)."""

    path: Path
    key: str


def engine_spec(choice: ModelChoice, *, int8: bool, stages: tuple[str, ...]) -> EngineSpec:
    """The engine a ModelChoice asks for: SCLIP for the "dense" stage, SAM2 for "masks"."""
    clip = sam = None
    if "dense" in stages:
        clip = _weights_of(DEFAULT_CLIP, choice.clip_checkpoint, choice.clip_random, choice.seed, "CLIP")
    if "masks" in stages:
        sam = _weights_of(choice.sam_model, choice.sam_checkpoint, choice.sam_random, choice.seed, "SAM2")
    if clip is None and sam is None:
        raise ClipsamError("an engine needs the dense (SCLIP) or the masks (SAM2) stage")
    return EngineSpec(clip, sam, int8)


def _weights_of(name: str, checkpoint: Path | None, random: bool, seed: int, what: str) -> ModelWeights:
    if checkpoint is None and not random:
        raise CheckpointError(
            f"no {what} checkpoint for {name}: run `clipsam download {name}`, pass the file, "
            "or use --random-weights"
        )
    return model_weights(get_model(name).name, None if random else checkpoint, seed)


def cached_engine(
    choice: ModelChoice, *, int8: bool, stages: tuple[str, ...], log: Log | None = None
) -> CachedEngine:
    """The cache's engine for `choice` (built on first use, in a child process, with progress on `log`)."""
    spec = engine_spec(choice, int8=int8, stages=stages)
    say = log or (lambda message: print(f"clipsam: {message}", file=sys.stderr, flush=True))
    from clipsam.engine.models.child_build import export_in_child

    return CachedEngine(ensure_engine(spec, say, export_in_child), spec.key)


def runtime_cache_dir(engine_folder: Path) -> Path:
    """Where the runtimes keep what they derive from an engine's graphs (optimised / compiled forms)."""
    return Path(engine_folder) / OPTIMIZED_DIR
