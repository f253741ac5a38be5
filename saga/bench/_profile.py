"""Summaries of ``py-spy record --format raw`` files (collapsed stacks)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def top_frames(path: Path, limit: int = 15, *, inclusive: bool = False) -> list[tuple[str, float]]:
    """The frames holding most samples, with their share of all samples (0..1).

    Args:
        path: A file written by ``py-spy record --format raw``.
        limit: How many frames to return.
        inclusive: Count a frame anywhere on the stack (else only the innermost one).
    """
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        samples = int(n)
        total += samples
        frames = stack.split(";")
        if inclusive:
            for frame in set(frames):
                counts[frame] += samples
        else:
            counts[frames[-1]] += samples
    if not total:
        return []
    return [(frame, n / total) for frame, n in counts.most_common(limit)]
