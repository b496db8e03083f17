"""How generated files name source locations: relative to the policy
directory, with '/' separators, so output does not depend on where the
checkout lives or on the working directory pepc ran in."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import PurePath

from pepc.policy.model import Location


@lru_cache(maxsize=4096)
def relative_file(file: str, root: str) -> str:
    if not file or not root:
        return PurePath(file).as_posix() if file else file
    p = PurePath(file)
    r = PurePath(root)
    if p.is_absolute():
        base = r if r.is_absolute() else PurePath(os.path.abspath(root))
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return p.as_posix()
    if not r.is_absolute():
        try:
            return p.relative_to(r).as_posix()
        except ValueError:
            pass
    return p.as_posix()  # already relative to the root


def display_location(loc: Location, root: str) -> str:
    f = relative_file(loc.file, root)
    return f"{f}:{loc.line}" if loc.line else f
