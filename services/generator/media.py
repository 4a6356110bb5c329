"""The media store port and its local-directory adapter, and the output checks."""

from __future__ import annotations

import abc
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


def link_or_copy(source: Path, target: Path) -> None:
    """`target` becomes a hard link to `source` (no data copied), or a copy where a link
    cannot be made (another filesystem). Media files are never modified once written, so
    sharing their data is safe."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class MediaStore(abc.ABC):
    """Permanent storage for outputs; an object store can implement this later."""

    @abc.abstractmethod
    def put(self, source: Path, key: str) -> str:
        """Store `source` under `key`; return its absolute, lasting URL."""


class LocalMediaStore(MediaStore):
    """Files under a directory that the api serves at `/media/`."""

    def __init__(self, root: Path, public_url: str) -> None:
        self._root = root
        self._base = public_url.rstrip("/") + "/media/"

    def put(self, source: Path, key: str) -> str:
        target = self._root / key
        try:
            os.link(source, target)  # atomic: a reader never sees half a file
        except OSError:  # a new directory, there already (an earlier attempt), another fs
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.unlink(missing_ok=True)  # left by a crash between link and replace
            link_or_copy(source, tmp)
            tmp.replace(target)  # atomic too
        return self._base + key


def media_keys(video_id: object) -> tuple[str, str]:
    """Where a video's file and its thumbnail go in the media store: beside those of other
    videos, in one of 256 directories named by the id's first two characters, rather than
    in a directory of their own. Making a directory per video was most of what storing a
    sandbox clip cost (a directory takes an inode and a block: 60-230 us of CPU on this
    ext4, against 10-15 us for a link into an existing one)."""
    name = str(video_id)
    return f"{name[:2]}/{name}.mp4", f"{name[:2]}/{name}.jpg"


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    frames: int
    duration_seconds: float
    codec: str


#: Probes by file identity. Media files are never modified once written, and the sandbox
#: hands every job a link to one of a few cached clips: probing each link again (demuxing
#: every packet) was a fifth of the generator's CPU under a sandbox load.
_PROBED: dict[tuple[int, int, int, int], Probe] = {}
_PROBED_MAX = 256


def probe(path: Path) -> Probe:
    """What the file holds (see `_probe`), remembered by its identity (device, inode, size,
    modification time), which a link shares and any rewrite changes."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    found = _PROBED.get(key)
    if found is None:
        found = _probe(path)
        if len(_PROBED) >= _PROBED_MAX:
            _PROBED.clear()
        _PROBED[key] = found
    return found


def _probe(path: Path) -> Probe:
    """Decode the container's header and count the frames by demuxing (no decoding)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for p in container.demux(stream) if p.size > 0)
        rate = stream.average_rate or stream.guessed_rate or Fraction(1)
        return Probe(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frames=frames,
            duration_seconds=float(frames / rate),
            codec=stream.codec_context.name,
        )


def mismatch(found: Probe, *, width: int, height: int, duration_seconds: int) -> str | None:
    """Why the output does not match the request, or None when it does."""
    if (found.width, found.height) != (width, height):
        return f"frame size {found.width}x{found.height}, requested {width}x{height}"
    if abs(found.duration_seconds - duration_seconds) > 0.5:
        return f"duration {found.duration_seconds:.2f}s, requested {duration_seconds}s"
    return None


def make_thumbnail(video: Path, target: Path) -> Path:
    """A JPEG of the middle frame, for providers that return only a video."""
    with av.open(str(video)) as container:
        frames = list(container.decode(video=0))
    if not frames:
        raise ValueError("the video has no frames")
    image = frames[len(frames) // 2].to_image()  # type: ignore[no-untyped-call]
    image.convert("RGB").save(target, "JPEG", quality=85)
    return target
